#!/usr/bin/env bash
# What ptxas made of the CUDA kernels, with no GPU: registers and stack (spills) per kernel, and optionally one
# kernel's SASS with its innermost-loop instruction mix. Compiles every source with NVRTC (Scripts/fetch_nvrtc.sh)
# through `haste selftest --compile-only` into CUBINs and reads them with cuobjdump from PyPI's
# nvidia-cuda-cuobjdump wheel (fetched once into .cache/cuda-tools; never committed).
#   Scripts/kernel_resources.sh [REGEX] [--sass KERNEL | --memory-order KERNEL]   (ARCH=90 by default; HASTE=path/to/haste)
# e.g. Scripts/kernel_resources.sh 'dkdv_d80w' --sass attention_flash_bf16_direct_in16_backward_dkdv_d80ws
# --memory-order prints the kernel's global and shared loads and stores, barriers, shuffles and arithmetic in program
# order, runs of one kind collapsed ("LDG×32 FFMA×16 SHFL×20 STG×1"): whether a kernel issues its loads ahead of
# their use (a run of loads) or one round trip after another (LDG FFMA LDG FFMA …).
# The loop mix counts the instructions of the innermost loop with mma (else the innermost loop) (static counts:
# a guide to what a change did to the loop body, not a timing). NVRTC compiles every family for sm_75/80/90 first
# (a few minutes; the CUBINs are kept in .cache/cuda-tools/cubins until the binary is rebuilt).
set -euo pipefail
cd "$(dirname "$0")/.."
regex=${1:-.}
sass=""
mode=mix
if [ "${2:-}" = "--sass" ]; then sass=${3:?"--sass needs a kernel name"}; fi
if [ "${2:-}" = "--memory-order" ]; then sass=${3:?"--memory-order needs a kernel name"}; mode=order; fi
arch=${ARCH:-90}
haste=${HASTE:-.build/release/haste}
[ -x "$haste" ] || { echo "kernel_resources: $haste not built (swift build -c release --product haste)" >&2; exit 1; }
nvrtc=$(Scripts/fetch_nvrtc.sh)
[ -n "$nvrtc" ] || { echo "kernel_resources: no NVRTC (see the warning above)" >&2; exit 1; }

tools=.cache/cuda-tools
cuobjdump=$tools/nvidia/cu13/bin/cuobjdump
export NVDISASM_PATH=$PWD/$tools/nvidia/cu13/bin     # cuobjdump -sass runs nvdisasm
if [ ! -x "$cuobjdump" ] || [ ! -x "$NVDISASM_PATH/nvdisasm" ]; then
    echo "fetching nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm from PyPI (once, ~60 MB) into $tools" >&2
    mkdir -p "$tools"
    python3 -m pip download --no-deps --quiet --disable-pip-version-check --only-binary=:all: \
        --platform manylinux2014_x86_64 --python-version 3 -d "$tools" \
        "nvidia-cuda-cuobjdump==13.5.37" "nvidia-cuda-nvdisasm==13.5.37" >&2 \
        || { echo "kernel_resources: pip download of cuobjdump/nvdisasm failed (offline?)" >&2; exit 1; }
    python3 - "$tools" <<'PY'
import glob, os, sys, zipfile
for wheel in glob.glob(os.path.join(sys.argv[1], "nvidia_cuda_*.whl")):
    with zipfile.ZipFile(wheel) as z:
        z.extractall(sys.argv[1])
    os.remove(wheel)
PY
    chmod +x "$cuobjdump" "$NVDISASM_PATH/nvdisasm"
fi

dump=$tools/cubins                                    # kept while newer than the binary (a rebuild compiles again)
if [ ! -f "$dump/stamp" ] || [ "$haste" -nt "$dump/stamp" ]; then
    rm -rf "$dump" && mkdir -p "$dump"
    echo "compiling every kernel family with NVRTC for sm_75/80/90 (a few minutes) into $dump" >&2
    HASTE_CUDA_DUMP_DIR=$dump HASTE_CUDA_LIB_DIR="$nvrtc" "$haste" selftest --compile-only > /dev/null
    touch "$dump/stamp"
fi
for cubin in "$dump"/*-sm_"$arch".cubin; do
    family=$(basename "$cubin" -sm_"$arch".cubin)
    "$cuobjdump" -res-usage "$cubin" | python3 -c '
import re, sys
family, regex, name = sys.argv[1], re.compile(sys.argv[2]), None
for line in sys.stdin:
    m = re.search(r"Function ([A-Za-z0-9_]+):", line)
    if m: name = m.group(1); continue
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)", line)
    if m and name and regex.search(name):
        print(f"{family:32s} {name:64s} {m.group(1):>4s} regs {m.group(2):>5s} B stack")
' "$family" "$regex"
done
[ -n "$sass" ] || exit 0
for cubin in "$dump"/*-sm_"$arch".cubin; do
    "$cuobjdump" -res-usage "$cubin" > "$dump/res.txt"
    grep -q "Function $sass:" "$dump/res.txt" || continue
    "$cuobjdump" -sass -fun "$sass" "$cubin" | grep -oE '/\*[0-9a-f]{4,6}\*/ +[^;]*;' | sed -E 's#/\*([0-9a-f]+)\*/ +#\1 #' \
        | python3 -c '
import collections, re, sys
ops = [l.rstrip("\n").split(" ", 1) for l in sys.stdin]
if sys.argv[2] == "order":                           # program order, runs of one kind collapsed
    kinds = ("LDGSTS", "LDGDEPBAR", "DEPBAR", "LDG", "STG", "LDSM", "LDS", "STS", "BAR", "MEMBAR", "ATOMG", "ATOMS", "RED",
             "SHFL", "HMMA", "FFMA", "FADD", "FMUL", "EXIT")
    runs = []
    for a, ins in ops:
        op = re.sub(r"^@!?U?P[0-9T] +", "", ins.strip()).split()[0].split(".")[0]
        if op not in kinds: continue
        if runs and runs[-1][1] == op: runs[-1][2] += 1
        else: runs.append([a, op, 1])
    print(f"{sys.argv[1]}: {len(ops)} instructions; memory, barriers, shuffles and arithmetic in order:")
    line = ""
    for a, op, n in runs:
        word = op + (f"×{n}" if n > 1 else "")
        if len(line) + len(word) > 110: print("  " + line); line = ""
        line += (" " if line else f"0x{a} ") + word
    print("  " + line)
    sys.exit()
loops = []                                         # backward branches: (target, branch)
for a, ins in ops:
    m = re.search(r"BRA (0x[0-9a-f]+)", ins)
    if m and int(m.group(1), 16) < int(a, 16): loops.append((int(m.group(1), 16), int(a, 16)))
print(f"{sys.argv[1]}: {len(ops)} instructions", end="")
if not loops: print(", no loop"); sys.exit()
def has_mma(lo, hi): return any(lo <= int(a, 16) <= hi and "MMA" in ins for a, ins in ops)
mma = [l for l in loops if has_mma(*l)]             # the innermost loop with tensor-core products, else the innermost
lo, hi = min(mma or loops, key=lambda l: l[1] - l[0])
body = [re.sub(r"^@!?U?P[0-9T] +", "", ins.strip()).split()[0].split(".")[0] for a, ins in ops if lo <= int(a, 16) <= hi]
print(f"; loop {hex(lo)}..{hex(hi)}: {len(body)}")
for op, n in collections.Counter(body).most_common(16): print(f"  {n:5d} {op}")
' "$sass" "$mode"
    exit 0
done
echo "kernel_resources: no kernel named $sass for sm_$arch" >&2
exit 1
