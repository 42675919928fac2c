#!/usr/bin/env bash
# The one prepared GPU check (STYLE §2.9; issue 11 acceptance; issue 12 §4 rows as `haste bench train` grows them).
#
#   OUT=/some/folder Scripts/gpu_check.sh
#
# Runs on a GPU node without Swift or network: one NVIDIA GPU, PyTorch with CUDA in `python3`, CUDA/cuBLAS/NVRTC in
# its nvidia/*/lib; the working tree is the repository root. Uses the packaged binary (Scripts/package.sh):
# $HASTE_PACKAGE, else the newest dist/haste-*-linux-x86_64.tar.{xz,gz}, else $HASTE_BIN, else .build/release/haste.
# Stages (each time-boxed with `timeout`, all within GPU_CHECK_BUDGET = 480 s; a failed stage is recorded and the
# script goes on):
#   1. nvidia-smi; haste doctor; can haste open cuda? (if not, every GPU stage is skipped and said so)
#   2. haste selftest --device cuda --json → $OUT/selftest.json   (teacher for stage 3 trains on the CPU meanwhile); then
#      its bf16 and attention cases once per way the tuner may keep, tuning off (selftest-ways: 9 short runs); then
#      haste's bf16 tiny SiT and DINOv2 against torch's CUDA autocast of them (make_bf16_fixture.py --device cuda,
#      selftest --torch-fixture: outputs and gradients in units of the bf16 effect)
#   3. the demo config (configs/demo.yaml, HASTE with a small DINOv2-architecture teacher) for $DEMO_STEPS steps on
#      the GPU and on the CPU at once, then a Python verdict comparing the loss curves → $OUT/demo_verdict.json
#   4. haste bench train --device cuda --mixed-precision bf16 (SiT-XL/2 at batch 64 and 256: plain, +align, +stopped;
#      one process per row; batch-256 +align as it is, else with --recompute-mlp-activation, else
#      --grad-checkpointing: see BENCH_CKPT_ROWS) beside
#      Scripts/bench_gpu_torch.py (the same rows, PyTorch eager, bf16 autocast, SDPA) → $OUT/bench_*.jsonl, with
#      step ms, img/s, TFLOP/s (one analytic FLOP count for both) and peak GPU memory per row
#   4b. where a step's time goes: HASTE_CUDA_PROFILE=1 (GPU time per kernel and GEMM shape, CUDA events),
#      HASTE_CUDA_HOST_ONLY=1 (haste's host-side time alone, no GPU work) and PyTorch's kernels for the same step
#      (torch.profiler, bench_gpu_torch.py --profile) for $PROFILE_ROW (a plain row) → profile-*.log; and the GPU
#      profile again with HASTE_FLASH_DIRECT=0 (the flash-attention kernels streaming through a stage, not straight
#      into double-buffered tiles) and with
#      HASTE_FLASH_FUSED_DQ=0 (dq from its own kernel) and with HASTE_BF16_BRANCHES=0 (float32 carriers between the
#      adaLN half-blocks' kernels, as before the bf16 branches) and with HASTE_GEMM_BIAS_EPILOGUE=0 (the linears' biases
#      copied into their outputs, not added by cuBLASLt's epilogue), and the GPU profile of the same row +align; where
#      the node has Nsight Compute (ncu), its occupancy, scheduler and warp-stall sections for one flash forward and
#      one dk/dv launch (profile-gpu-ncu-*)
#   5. data parallelism (issue #13), in ≤ SCALING_BUDGET = 90 s of its own after stages 1–4:
#      a. NCCL on the GPU, one rank: the demo's first $NCCL_STEPS steps with --dist-backend nccl (unique id,
#         ncclCommInitRank, bucketed ncclAllReduce on haste's stream, ncclCommDestroy) against stage 3's run without
#         it (same losses; img/s overhead), and haste bench allreduce of SiT-B/2's gradients through 1-rank NCCL
#      b. CPU weak scaling of SiT-S/2 training: mpirun -np 1/2/4/8 × 2 threads, 2 images per rank per step;
#         efficiency = per-rank img/s vs 1 rank → $OUT/weak_scaling.json (skipped without mpirun)
#   6. issue 12's other figures, in ≤ ISSUE12_BUDGET = 300 s of its own after stage 5:
#      a. SiT-B/2 (denoising only) on the demo data for $PRECISION_STEPS steps: float32 with seeds 0 and 1, bf16 with
#         seed 0; verdict: the bf16 curve (20-step means) within 1.5× the seed-to-seed gap → precision_verdict.json
#      b. haste generate (SDE, CFG 1.65 for t ≤ 0.72; float32 (TF32 attention, and HASTE_FLASH_TF32=0) and bf16) beside the reference sampler in PyTorch
#         (Scripts/bench_gpu_generate.py: float32 + TF32 as generate.py, and bf16 autocast) on $GEN_MODEL with the same
#         random weights, $GEN_STEPS steps of batch $GEN_BATCH → ms per step and images/s at 250 steps; then the GPU
#         time per kernel of a short haste generate in bf16 and float32 (HASTE_CUDA_PROFILE=1)
#         and the sampler's host work between model calls on this node's CPU (`bench ops` row 'sde sampler host', and
#         bench_torch.py's reference sampler body beside it); `haste bench sample` (generate's sampling alone: a guided
#         and an unguided bf16 step, and the whole run's images/s from them)
# Rehearsal without a GPU: GPU_CHECK_DEVICE=cpu runs every stage with --device cpu (PYTHON names a python3 with
# torch, DEMO_STEPS/BENCH_BATCHES shrink the work; PRECISION_MODEL="SiT-S/2 64 4 2", GEN_MODEL=SiT-B/2 GEN_STEPS=2
# GEN_BATCH=2 make stage 6 fit a CPU). Everything is written under $OUT; $OUT/summary.txt lists each stage (ok, FAILED rc, TIMEOUT, skipped), its time
# and its log, then the key results. The exit status is 0 only when every stage passed. Everything but
# summary.txt is packed into $OUT/results.tar.gz at the end (the device tool brings back only a few files).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
summary="$OUT/summary.txt"
work=${GPU_CHECK_WORK:-/tmp/haste-gpu-check}
BUDGET=${GPU_CHECK_BUDGET:-480}                        # seconds for the whole script: later stages get what is left
DEMO_STEPS=${DEMO_STEPS:-200}
TEACHER_STEPS=${TEACHER_STEPS:-100}                    # the demo's small DINOv2-architecture teacher, trained on the CPU
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
BENCH_MODELS=${BENCH_MODELS:-SiT-XL/2}                 # training-step rows, haste and PyTorch alike
BENCH_BATCHES=${BENCH_BATCHES:-64,256}
BENCH_PRECISION=${BENCH_PRECISION:-bf16}               # haste's --mixed-precision; PyTorch: bf16 autocast (fp32/tf32 for no)
BENCH_ROWS=${BENCH_ROWS:-'^SiT-'}                       # which of those rows haste times (a regex)
# Memory-bound rows (a regex): each runs as it is first, and where that gives no result (out of memory) with
# --recompute-mlp-activation, then with --grad-checkpointing (named "… +ckpt"). The memory estimate, from the
# host-only device (HASTE_CUDA_HOST_ONLY=1 haste bench train --device cuda --models SiT-XL/2 --batches 256 --only ROW:
# the real allocations, no GPU), 2026-12-06 with the aligned blocks on bf16 operands, the fused alignment loss and
# the allocator's fit: SiT-XL/2 bf16 batch 256 peaks at 101 GiB of tensors (103 GiB held from the driver) plain and
# after the early stop, +align at 116 GiB (125 GiB held; PyTorch eager: 134 GiB), all within the H200's 139 GiB.
# Before those three, +align held 137–158 GiB and ran checkpointed; before the bf16 branches every batch-256 row did.
BENCH_CKPT_ROWS=${BENCH_CKPT_ROWS:-' bs256 \+align'}
# Those rows skip the attempt as they are on a GPU with less memory than this (MiB; the estimate's 128 175 MiB held
# plus 4 GiB for the CUDA context, cuBLAS and NCCL): on an 80 GB H100 it could only run out of memory.
BENCH_CKPT_FIT_MIB=${BENCH_CKPT_FIT_MIB:-132300}
BENCH_TORCH_ARGS=${BENCH_TORCH_ARGS:-}                  # more bench_gpu_torch.py flags (--kinds, --reps)
SCALING_BUDGET=${SCALING_BUDGET:-90}                    # stage 5's own seconds, after the $BUDGET of stages 1–4
NCCL_STEPS=${NCCL_STEPS:-50}
PROFILE_ROW=${PROFILE_ROW:-SiT-XL/2 bs64}             # stage 4b's row (of BENCH_MODELS × BENCH_BATCHES)
# The recent kernel paths' switches (each keeps the path under it; the same values on the emulated device): after a
# failure the selftest reruns its bf16 and attention cases with each ISOLATE switch off, and the profile measures the
# bs64 row with each PROFILE variant (HASTE_FLASH_TF32 touches no training row: the generate stages time it).
# A variant may set several switches, comma-separated.
ISOLATE_SWITCHES="HASTE_FUSED_GATED_BACKWARD HASTE_FUSED_MLN_PARTIALS HASTE_GEMM_GELU_EPILOGUE HASTE_GEMM_BGRAD_EPILOGUE HASTE_ROW_WARP HASTE_UNARY_SPECIALIZED HASTE_FLASH_TF32 HASTE_FLASH_WHOLE HASTE_FLASH_DQ_SERIAL HASTE_FLASH_DQ_LAST_BLOCK HASTE_FLASH_DIRECT HASTE_GEMM_BIAS_EPILOGUE HASTE_BF16_BRANCHES HASTE_FLASH_DQ_EARLY_LOAD HASTE_CUDA_STAGING_MB HASTE_CAST_SEGMENTS HASTE_GATHER_COLUMNS HASTE_ADD_WIDENED HASTE_CUDA_TUNE"
PROFILE_VARIANTS="carveout:HASTE_CUDA_SHARED_CARVEOUT=100 dq-late-load:HASTE_FLASH_DQ_EARLY_LOAD=0 dq-kernel:HASTE_FLASH_FUSED_DQ=0
  gated-two-pass:HASTE_FUSED_GATED_BACKWARD=0 mln-sums-kernel:HASTE_FUSED_MLN_PARTIALS=0
  gelu-kernels:HASTE_GEMM_GELU_EPILOGUE=0 bias-sums:HASTE_GEMM_BGRAD_EPILOGUE=0 weight-casts:HASTE_ARENA_CAST=0
  grad-casts:HASTE_CAST_SEGMENTS=0 piece-copies:HASTE_GATHER_COLUMNS=0 widen-first:HASTE_ADD_WIDENED=0
  dq-last-block:HASTE_FLASH_DQ_SERIAL=0 block-rows:HASTE_ROW_WARP=0 generic-unary:HASTE_UNARY_SPECIALIZED=0
  staged-flash:HASTE_FLASH_DIRECT=0 general-flash:HASTE_FLASH_WHOLE=0
  dq-sum:HASTE_FLASH_DQ_SERIAL=0,HASTE_FLASH_DQ_LAST_BLOCK=0 carriers:HASTE_BF16_BRANCHES=0
  bias-copy:HASTE_GEMM_BIAS_EPILOGUE=0 d-from-bf16-out:HASTE_FLASH_D_FROM_LOW_OUTPUT=1 sync-uploads:HASTE_CUDA_STAGING_MB=0
  untuned:HASTE_CUDA_TUNE=0"
WEAK_RANKS=${WEAK_RANKS:-1 2 4 8}
WEAK_STEPS=${WEAK_STEPS:-6}
WEAK_THREADS=${WEAK_THREADS:-2}                        # per rank (the rehearsal on 2 cores: 1)
ISSUE12_BUDGET=${ISSUE12_BUDGET:-300}                  # stage 6's own seconds, after stage 5 (a cap: ~150 expected)
PRECISION_STEPS=${PRECISION_STEPS:-200}                # 6a: steps per run (3 runs)
PRECISION_MODEL=${PRECISION_MODEL:-SiT-B/2 768 12 12}  # 6a: model, hidden size, depth, heads (the rehearsal: smaller)
GEN_MODEL=${GEN_MODEL:-SiT-XL/2}                       # 6b: haste generate vs the reference sampler
GEN_STEPS=${GEN_STEPS:-25}
GEN_BATCH=${GEN_BATCH:-64}
GEN_BOX=${GEN_BOX:-90}                                 # 6b: each generate stage's seconds (a cold node compiles kernels first)
cpus=$(nproc 2>/dev/null || echo 4)
export HASTE_CACHE=${HASTE_CACHE:-$work/cache}      # NVRTC's CUBIN cache: kept out of $OUT
# Every process prints the tuner's decisions (the flash and row kernels' same-bits ways, timed at a shape's first call;
# LaunchTuner.swift) on stderr, so each stage's log says what ran and how long each way took.
export HASTE_CUDA_TUNE=${HASTE_CUDA_TUNE:-verbose}
mkdir -p "$work" "$HASTE_CACHE"
: > "$summary"
failures=0
# The logs and JSON files into one archive when the script ends, however it ends (summary.txt stays beside it).
bundle() {
  (cd "$OUT" && ls -A | grep -v -x -e summary.txt -e results.tar.gz > "$work/bundle.list"
   [ -s "$work/bundle.list" ] && tar -czf results.tar.gz -T "$work/bundle.list" && xargs rm -rf < "$work/bundle.list") || true
}
trap bundle EXIT
t0=$(date +%s)

note() { echo "$*" | tee -a "$summary"; }
# record NAME RC SECONDS LOG: one summary line per stage.
record() {
  local status
  case "$2" in
    0) status=ok ;;
    124|137) status="TIMEOUT" ;;
    skip) status="skipped" ;;
    budget) status="NOT RUN" ;;
    *) status="FAILED rc $2" ;;
  esac
  [ "$2" = 0 ] || [ "$2" = skip ] || failures=$((failures + 1))
  printf '%-28s %-14s %5ss  %s\n' "$1" "$status" "$3" "$4" | tee -a "$summary"
}
# The time box of a stage: its own, cut to what is left of $BUDGET; 0 when less than 10 s are left.
boxed() {
  local left=$(( t0 + BUDGET - $(date +%s) ))
  if [ "$left" -lt 10 ]; then echo 0; elif [ "$1" -gt "$left" ]; then echo "$left"; else echo "$1"; fi
}
# GPU_CHECK_ONLY (a regex of stage names; the node checks nvidia-smi, doctor and cuda-open always run): a rerun of
# some stages only, e.g. GPU_CHECK_ONLY='^(selftest|bench-|profile-gpu$|generate-)'. The others are "skipped".
ONLY=${GPU_CHECK_ONLY:-}
selected() { [ -z "$ONLY" ] || [[ "$1" =~ ^(nvidia-smi|doctor|cuda-open)$ ]] || [[ "$1" =~ $ONLY ]]; }
# stage NAME SECONDS CMD...: runs CMD under `timeout`, output to $OUT/NAME.log.
stage() {
  local name=$1 box start rc; box=$(boxed "$2"); shift 2
  if ! selected "$name"; then record "$name" skip 0 "not in GPU_CHECK_ONLY"; return 0; fi
  if [ "$box" = 0 ]; then record "$name" budget 0 "time budget of ${BUDGET}s spent"; return 1; fi
  start=$(date +%s)
  echo "== $name (≤ ${box}s): $*" > "$OUT/$name.log"
  timeout -k 10 "$box" "$@" >> "$OUT/$name.log" 2>&1 < /dev/null
  rc=$?
  record "$name" "$rc" $(( $(date +%s) - start )) "$OUT/$name.log"
  return $rc
}
skip() { record "$1" skip 0 "$2"; }
# bg NAME SECONDS CMD...: a stage in the background (its pid in $bg_pid); reap NAME PID records it.
bg() {
  local name=$1 box; box=$(boxed "$2"); shift 2
  date +%s > "$work/$name.start"
  if ! selected "$name"; then echo skip > "$work/$name.rc"; true & bg_pid=$!; return 0; fi
  [ "$box" = 0 ] && box=1
  echo "== $name (≤ ${box}s, in the background): $*" > "$OUT/$name.log"
  ( timeout -k 10 "$box" "$@" >> "$OUT/$name.log" 2>&1 < /dev/null; echo $? > "$work/$name.rc" ) &
  bg_pid=$!
}
reap() {
  wait "$2"
  local rc; rc=$(cat "$work/$1.rc" 2>/dev/null || echo 1)
  record "$1" "$rc" $(( $(date +%s) - $(cat "$work/$1.start") )) "$OUT/$1.log"
}

note "haste GPU check: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -n), $cpus CPUs, repo $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"

# --- the binary -----------------------------------------------------------------------------------------------
unpack() {
  local pkg=${HASTE_PACKAGE:-$(ls -t "$repo"/dist/haste-*-linux-x86_64.tar.xz "$repo"/dist/haste-*-linux-x86_64.tar.gz 2>/dev/null | head -1)}
  if [ -n "$pkg" ] && [ -f "$pkg" ]; then
    rm -rf "$work/pkg" && mkdir -p "$work/pkg"
    # GNU tar picks the decompressor; Python's tarfile where tar has no xz.
    tar -xf "$pkg" -C "$work/pkg" 2>/dev/null \
      || python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$pkg" "$work/pkg" || return 1
    HASTE=$(ls "$work"/pkg/haste-*/haste | head -1)
    echo "package $pkg → $HASTE"
    echo "node: $(ldd --version 2>&1 | head -1)"
    if ! "$HASTE" --version > /dev/null 2>&1; then
      # The shipped libstdc++ needs a newer glibc than this node's: use the node's own (PyTorch needs one too).
      echo "the packaged binary does not start: $("$HASTE" --version 2>&1 | head -2)"
      local libs; libs=$(dirname "$HASTE")/lib
      mkdir -p "$libs/unused" && mv "$libs"/libstdc++.so.6 "$libs"/libgcc_s.so.1 "$libs/unused/"
      echo "retrying with the system's libstdc++ and libgcc_s"
    fi
  elif [ -x "${HASTE_BIN:-$repo/.build/release/haste}" ]; then
    HASTE=${HASTE_BIN:-$repo/.build/release/haste}
    echo "no package in dist/: using $HASTE"
  else
    echo "no packaged binary: run Scripts/package.sh and carry dist/haste-*-linux-x86_64.tar.xz (or set HASTE_PACKAGE)"
    return 1
  fi
  "$HASTE" --version
}
HASTE=""
start=$(date +%s)
unpack > "$OUT/unpack.log" 2>&1
rc=$?
[ -n "$HASTE" ] || rc=1
record unpack "$rc" $(( $(date +%s) - start )) "$OUT/unpack.log"
if [ "$rc" != 0 ]; then note "no haste binary: nothing else can run"; exit 1; fi

# cuBLAS/NVRTC from PyTorch's wheels, in addition to haste's own search (it scans Python prefixes without Python).
pylibs=$(timeout 60 python3 - 2>/dev/null <<'EOF'
import glob, os
try:
    import nvidia
    print(":".join(sorted(d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "lib")))))
except Exception:
    pass
EOF
)
[ -n "$pylibs" ] && export LD_LIBRARY_PATH="$pylibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
note "LD_LIBRARY_PATH += ${pylibs:-(python3 has no nvidia/*/lib)}"

# --- 1. the node --------------------------------------------------------------------------------------------
stage nvidia-smi 30 nvidia-smi
stage doctor 60 "$HASTE" doctor
if ! stage cuda-open 90 "$HASTE" selftest --device "$DEVICE" --ops "fill / zeros" ; then
  note "haste cannot open --device $DEVICE here (see $OUT/cuda-open.log): every GPU stage is skipped"
  for s in selftest demo-teacher demo-gpu demo-cpu demo-compare bench-haste bench-torch nccl-train nccl-allreduce; do
    skip "$s" "no CUDA device"
  done
  note "total $(( $(date +%s) - t0 ))s; $failures stage(s) failed"
  exit 1
fi

# --- 2. conformance (the demo's teacher trains on the CPU meanwhile) ----------------------------------------------
demo="$work/demo"
rm -rf "$demo" && mkdir -p "$demo"
data=""
for d in "${HASTE_DEMO_DATA:-}" "$repo/dist/fashion-mnist" /usr/share/datasets/fashion-mnist; do
  [ -n "$d" ] && [ -f "$d/train-images-idx3-ubyte.gz" ] && { data=$d; break; }
done
if [ -z "$data" ]; then
  # No Fashion-MNIST on the node: 2048 synthetic 28×28 images in 10 classes (a class-dependent bar and blob plus
  # noise), written as idx files so the demo config runs unchanged.
  data="$demo/data"
  mkdir -p "$data"
  python3 - "$data" <<'EOF' > "$OUT/demo-data.log" 2>&1
import gzip, random, struct, sys
out, n = sys.argv[1], 2048
rng = random.Random(0)
pixels, labels = bytearray(), bytearray()
for i in range(n):
    c = i % 10
    for y in range(28):
        for x in range(28):
            v = 40 * rng.random()
            if abs(x - (3 + 2 * c)) < 2: v += 150
            if (x - 14) ** 2 + (y - 4 - 2 * c) ** 2 < 20: v += 90
            pixels.append(min(255, int(v)))
    labels.append(c)
with gzip.open(f"{out}/train-images-idx3-ubyte.gz", "wb") as f: f.write(struct.pack(">IIII", 2051, n, 28, 28) + pixels)
with gzip.open(f"{out}/train-labels-idx1-ubyte.gz", "wb") as f: f.write(struct.pack(">II", 2049, n) + labels)
print(f"{n} synthetic images in {out}")
EOF
fi
note "demo data: $data"
cfg="$demo/demo.yaml"
sed -e "s|^data-dir:.*|data-dir: $data|" -e "s|^enc-weights:.*|enc-weights: $demo/teacher.safetensors|" \
    -e "s|^output-dir:.*|output-dir: $demo/runs|" -e "s|^fid-every:.*|fid-every: 0|" \
    -e "s|^sample-count:.*|sample-count: 8|" "$repo/configs/demo.yaml" > "$cfg"

half=$(( cpus / 2 > 1 ? cpus / 2 : 1 ))
bg demo-teacher 120 "$HASTE" train-teacher "$cfg" --device cpu --steps "$TEACHER_STEPS" --threads "$half"
teacher_pid=$bg_pid
# The table goes to the log row by row (a crash still shows how far it got); the JSON to $OUT/selftest.json.
if ! stage selftest 150 "$HASTE" selftest --device "$DEVICE" --json-output "$OUT/selftest.json" --threads "$half"; then
  # Which of the recent kernel paths a failure follows: the bf16 cases again with each switch off (each keeps the
  # path under it, the same values on the emulated device); the summary lists PASS/FAIL per switch.
  for sw in $ISOLATE_SWITCHES; do
    stage "selftest-$sw" 60 env "$sw=0" "$HASTE" selftest --device "$DEVICE" --ops "autocast bf16,attention,TF32" --threads "$half"
  done
fi
# Each same-bits alternative the tuner may keep (LaunchTuner.swift), forced with tuning off: the rules' choices, each
# way the dk/dv kernel may sum dq and its general entry point, the row kernels by block, modulatedLayerNorm's sums by
# their own kernel, the gated backward in two kernels. The tuner tries them all at a shape's first call and keeps the
# fastest, which on SiT-XL/2's shapes may be one it does not keep on the selftest's (whose few heads would not take the
# serial sum): the bf16 and attention cases once per way.
stage selftest-ways 120 bash -c 'set -o pipefail; rc=0
  for w in rules:HASTE_CUDA_TUNE=0 serial:HASTE_FLASH_DQ_SERIAL=1 serial-late:HASTE_FLASH_DQ_SERIAL=1,HASTE_FLASH_DQ_EARLY_LOAD=0 \
           last-block:HASTE_FLASH_DQ_SERIAL=0 sum-kernel:HASTE_FLASH_DQ_SERIAL=0,HASTE_FLASH_DQ_LAST_BLOCK=0 general-entry:HASTE_FLASH_WHOLE=0 \
           block-rows:HASTE_ROW_WARP=0 mln-sums-kernel:HASTE_FUSED_MLN_PARTIALS=0 gated-two-kernels:HASTE_FUSED_GATED_BACKWARD=0; do
    IFS=, read -r -a sw <<< "${w#*:}"
    env "${sw[@]}" HASTE_CUDA_TUNE=0 "$1" selftest --device "$2" --ops "autocast bf16,attention" --threads "$3" 2>&1 \
      | sed "s/^/${w%%:*}: /" || rc=1
  done; exit $rc' _ "$HASTE" "$DEVICE" "$half"
# haste's bf16 against torch's own autocast on this device (the tests can only compare with torch's CPU autocast): the
# tiny SiT's outputs and gradients and the tiny DINOv2 teacher's outputs in units of the bf16 effect, torch's side by
# make_bf16_fixture.py on $DEVICE.
tf="$work/torch-fixture"; rm -rf "$tf"
stage selftest-torch-fixture 90 bash -c '"$1" "$2/Scripts/fixtures/make_bf16_fixture.py" --device "$3" --only bf16_sit,bf16_dinov2 --out "$4" \
  && "$5" selftest --device "$3" --torch-fixture "$4/bf16_sit.safetensors" --torch-fixture "$4/bf16_dinov2.safetensors"' \
  _ "$PYTHON" "$repo" "$DEVICE" "$tf" "$HASTE"
# The same with the flash backward's D from the bf16 output (HASTE_FLASH_D_FROM_LOW_OUTPUT=1, torch's CUDA SDPA way;
# off by default: on the emulated device it moved the tiny SiT's gradients away from torch's CPU autocast): which is nearer torch's CUDA run.
if [ -f "$tf/bf16_sit.safetensors" ]; then
  HASTE_FLASH_D_FROM_LOW_OUTPUT=1 stage selftest-torch-fixture-d16 30 "$HASTE" selftest --device "$DEVICE" --torch-fixture "$tf/bf16_sit.safetensors"
else
  skip selftest-torch-fixture-d16 "no torch fixture (see selftest-torch-fixture.log)"
fi
reap demo-teacher $teacher_pid

# --- 3. the demo on both devices ----------------------------------------------------------------------------------
if [ -f "$demo/teacher.safetensors" ]; then
  common=(--max-train-steps "$DEMO_STEPS" --checkpointing-steps 100000 --sampling-steps 100000 --set log-every=10
          --mixed-precision no)   # float32 on both: `auto` would train the GPU run in bf16
  bg demo-cpu 120 "$HASTE" train "$cfg" --device cpu --exp-name cpu --threads $(( cpus > 2 ? cpus - 2 : 1 )) "${common[@]}"
  cpu_pid=$bg_pid
  stage demo-gpu 120 "$HASTE" train "$cfg" --device "$DEVICE" --exp-name gpu --threads 2 "${common[@]}"
  reap demo-cpu $cpu_pid
  # (a file, not a here-document: stages read /dev/null)
  cat > "$work/compare_demo.py" <<'EOF'
import json, math, sys
def load(p):
    rows = [json.loads(l) for l in open(p) if l.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}
gpu, cpu = load(sys.argv[1]), load(sys.argv[2])
steps = sorted(set(gpu) & set(cpu))
assert steps, "no common steps in the two metrics files"
rel = [abs(gpu[s] - cpu[s]) / max(abs(cpu[s]), 1e-12) for s in steps]
early = [r for s, r in zip(steps, rel) if s <= 10]
tail = steps[-max(1, len(steps) // 4):]
mean = lambda xs: sum(xs) / len(xs)
g_tail, c_tail = mean([gpu[s] for s in tail]), mean([cpu[s] for s in tail])
finite = all(math.isfinite(gpu[s]) for s in steps)
# Criteria: the first 10 steps agree to float32 accumulation error (same seed, same draws: 1e-3 relative), the
# mean of the last quarter of the run within 5 % (chaotic divergence of two correct float32 runs stays well inside).
verdict = {"steps": len(steps), "max_rel_first_10": max(early) if early else None, "max_rel_all": max(rel),
           "tail_mean_gpu": g_tail, "tail_mean_cpu": c_tail, "tail_rel": abs(g_tail - c_tail) / abs(c_tail),
           "finite": finite}
verdict["passed"] = finite and (not early or max(early) <= 1e-3) and verdict["tail_rel"] <= 0.05
json.dump({"verdict": verdict, "gpu": [gpu[s] for s in steps], "cpu": [cpu[s] for s in steps], "step": steps},
          open(sys.argv[3], "w"), indent=1)
print(json.dumps(verdict, indent=1))
print("demo loss curves:", "MATCH" if verdict["passed"] else "DIFFER")
sys.exit(0 if verdict["passed"] else 1)
EOF
  stage demo-compare 30 python3 "$work/compare_demo.py" "$demo/runs/gpu/metrics.jsonl" "$demo/runs/cpu/metrics.jsonl" "$OUT/demo_verdict.json"
else
  for s in demo-cpu demo-gpu demo-compare; do skip "$s" "no teacher (see $OUT/demo-teacher.log)"; done
fi

# --- 4. training-step time: haste beside PyTorch, both in $BENCH_PRECISION ---------------------------------------------
bench_sizes=(--models "$BENCH_MODELS" --batches "$BENCH_BATCHES")
rows=$("$HASTE" bench train --list "${bench_sizes[@]}" 2>/dev/null | grep -E "$BENCH_ROWS" || true)
note "haste bench train rows ($BENCH_PRECISION; where /$BENCH_CKPT_ROWS/ as they are, else --recompute-mlp-activation, else --grad-checkpointing): $(echo $rows | tr '\n' ';')"
# One process per row (peak memory per row); each row's JSON on one line; a row matching $CKPT runs checkpointed.
bench_rows='while IFS= read -r r; do [ -n "$r" ] || continue
  run() { "$HASTE" bench train --device "$DEVICE" "$@" --reps 3 --warmup 1 --json --mixed-precision "$PRECISION" $SIZES | tr -d "\n"; }
  if [[ "$r" =~ $CKPT ]]; then      # the memory-bound rows: as they are, else recomputed MLP activations, else grad-checkpointing
    if [ "${GPU_MIB:-0}" -ge "$FIT_MIB" ]; then
      out=$(run --only "$r")
      if [[ "$out" == "{"* ]]; then echo "$out"; echo "row $r: as it is (fits)" >&2; continue; fi
    else echo "row $r: not tried as it is (${GPU_MIB:-unknown} MiB on the GPU, under $FIT_MIB)" >&2; fi
    out=$(run --only "$r" --recompute-mlp-activation)
    if [[ "$out" == "{"* ]]; then echo "$out"; echo "row $r: with --recompute-mlp-activation" >&2
    else echo "row $r: --recompute-mlp-activation gave no result either, so +ckpt" >&2; run --only "$r +ckpt" --grad-checkpointing; echo; fi
  else run --only "$r"; echo; fi
done <<< "$ROWS"'
# The GPU's memory (nvidia-smi; unknown: the attempt as it is runs, as on a CPU rehearsal).
GPU_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1 | tr -dc '0-9')
export HASTE DEVICE ROWS="$rows" SIZES="--models $BENCH_MODELS --batches $BENCH_BATCHES" PRECISION="$BENCH_PRECISION" CKPT="$BENCH_CKPT_ROWS" \
  GPU_MIB="${GPU_MIB:-999999}" FIT_MIB="$BENCH_CKPT_FIT_MIB"
stage bench-haste 150 bash -c "$bench_rows" bench
grep '^{' "$OUT/bench-haste.log" > "$OUT/bench_haste.jsonl"
case "$BENCH_PRECISION" in bf16) torch_precision=bf16 ;; *) torch_precision=fp32 ;; esac
stage bench-torch 110 "$PYTHON" "$repo/Scripts/bench_gpu_torch.py" --device "$DEVICE" --models "$BENCH_MODELS" --batches "$BENCH_BATCHES" \
  --precisions "$torch_precision" --kinds plain,align,stopped --reps 3 --warmup 1 $BENCH_TORCH_ARGS --jsonl "$OUT/bench_torch.jsonl"

# --- 4b. where the time goes: GPU time per kernel (CUDA events), and the host's share alone ----------------------------
profile_row='"$HASTE" bench train --device "$DEVICE" --only "$ROW" --models "$MODELS" --batches "$BATCHES" --reps 2 --warmup 1 --mixed-precision "$PRECISION"'
if [ "$DEVICE" = cuda ]; then
  ROW="$PROFILE_ROW" MODELS="$BENCH_MODELS" BATCHES="$BENCH_BATCHES" HASTE_CUDA_PROFILE=1 stage profile-gpu 60 bash -c "$profile_row"
  # Why the flash kernels run far off their instruction counts (dk/dv ~10x on the H100): Nsight Compute's occupancy,
  # scheduler and warp-stall sections for one forward and one dk/dv launch of the second step, where the node has ncu
  # (next to nvcc, in /usr/local/cuda*/bin or /opt/nvidia/nsight-compute); each kernel its own run of the row.
  ncu=$(command -v ncu || ls -d "$(dirname "$(command -v nvcc 2>/dev/null || echo /none/nvcc)")"/ncu /usr/local/cuda*/bin/ncu \
        /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  for k in forward:_forward_d backward-dkdv:_backward_dkdv_d; do
    if [ -n "$ncu" ] && [ -x "$ncu" ]; then
      # (untuned: the tuner's timing runs would count among the skipped launches, and replays make their times moot)
      HASTE_CUDA_TUNE=0 stage "profile-gpu-ncu-${k%%:*}" 75 "$ncu" \
        --target-processes all --kernel-name "regex:attention_flash_bf16.*${k#*:}" --launch-skip 28 --launch-count 1 \
        --section LaunchStats --section Occupancy --section SpeedOfLight --section SchedulerStats --section WarpStateStats \
        --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --print-summary none \
        "$HASTE" bench train --device "$DEVICE" --only "$PROFILE_ROW" --models "$BENCH_MODELS" --batches "$BENCH_BATCHES" \
        --reps 1 --warmup 1 --mixed-precision "$BENCH_PRECISION"
    else
      skip "profile-gpu-ncu-${k%%:*}" "no Nsight Compute (ncu) on this node"
    fi
  done
  # The same row with one kernel path switched back each (PROFILE_VARIANTS, name:switches; the summary lists each
  # one's flash, row and unary kernels): gelu-kernels, the MLPs' GELU and its gradient as kernels instead of in
  # cuBLASLt's GEMM epilogues (GELU_AUX_BIAS, DGELU_BGRAD: what those gain); bias-sums, the bias gradients as column
  # sums instead of the weight gradients' BGRADB epilogue; weight-casts, each weight and bias cast to bf16 where it
  # is read instead of the parameter arena's one cast a step; carveout, the flash kernels (over 48 KiB of shared
  # memory) asking for the most shared memory per multiprocessor (the profile's [.. blocks/SM] column says whether
  # the driver's own choice ran fewer blocks at once than the kernels' design assumes: dk/dv's 2); gated-two-pass,
  # the gated residuals' dy and dgate partials by two kernels again (what reading dout once gains); mln-sums-kernel,
  # the modulated LayerNorms' dshift/dscale chunk sums by their own kernel again (what summing in the dx pass gains);
  # dq-late-load, the serial dq sum's running sum loaded after dS·K, right before its adds (a round trip, mostly L2,
  # exposed per query tile; two before 12-07) instead of before the barrier and dS·K (what the early load gains);
  # sync-uploads, every host → device copy waiting for the stream (pageable, as before 12-07) instead of going through
  # pinned staging (what not draining the queue at each upload gains; the batch's upload mostly);
  # dq-last-block, dq summed by each query tile's last dk/dv block instead of
  # serially by one block per head (what the serial sum gains); block-rows, LayerNorm and softmax rows by block
  # instead of by warp; generic-unary, the activations through the generic bf16 unary kernels (what their own entry
  # points gain); staged-flash, the flash kernels streaming through a stage and the heads copied out of qkv and back
  # (what the direct kernels gain; HASTE_FLASH_ASYNC=0 was measured on 12-04);
  # general-flash, the direct kernels' run-time tile widths and 64-row forward tiles (what the WHOLE entry points
  # gain); dq-sum, dq's partials summed by their own kernel (what the last-block sum gains); dq-kernel, dq from its
  # own kernel (what taking it from dk/dv gains); carriers, the bf16 branches off (float32 carriers between the fused
  # kernels); bias-copy, the linears' biases copied into their outputs (what cuBLASLt's bias epilogue gains);
  # untuned, the rules' choices (dq way, entry points, row kernels: what tuning gains; profile-gpu's log has the tuner's times). Every
  # variant runs untuned (HASTE_CUDA_TUNE=0), so each differs from `untuned` by its own switches only.
  for p in $PROFILE_VARIANTS; do
    IFS=, read -r -a switches <<< "${p#*:}"
    stage "profile-gpu-${p%%:*}" 60 env HASTE_CUDA_TUNE=0 "${switches[@]}" ROW="$PROFILE_ROW" MODELS="$BENCH_MODELS" BATCHES="$BENCH_BATCHES" \
      HASTE_CUDA_PROFILE=1 bash -c "$profile_row"
  done
  # The aligned row (teacher forward with logits, the student's logit blocks, the alignment losses): what +align adds.
  ROW="$PROFILE_ROW +align" MODELS="$BENCH_MODELS" BATCHES="$BENCH_BATCHES" HASTE_CUDA_PROFILE=1 \
    stage profile-gpu-align 60 bash -c "$profile_row"
  ROW="$PROFILE_ROW" MODELS="$BENCH_MODELS" BATCHES="$BENCH_BATCHES" HASTE_CUDA_HOST_ONLY=1 stage profile-host 40 bash -c "$profile_row"
  read -r pmodel pbatch <<< "$PROFILE_ROW"
  stage profile-torch 60 "$PYTHON" "$repo/Scripts/bench_gpu_torch.py" --device cuda --models "$pmodel" --batches "${pbatch#bs}" \
    --precisions "$torch_precision" --kinds plain --reps 1 --warmup 1 --profile 30
else
  for s in profile-gpu profile-gpu-ncu-forward profile-gpu-ncu-backward-dkdv $(for p in $PROFILE_VARIANTS; do echo "profile-gpu-${p%%:*}"; done) \
           profile-gpu-align profile-host profile-torch; do
    skip "$s" "needs --device cuda"
  done
fi

# --- 5. data parallelism: NCCL on one GPU, CPU weak scaling (a budget of its own) ----------------------------------
note "stages 1–4 took $(( $(date +%s) - t0 ))s"
t0=$(date +%s); BUDGET=$SCALING_BUDGET                 # boxed() now counts stage 5's seconds
if [ "$DEVICE" != cuda ]; then
  skip nccl-train "NCCL needs --device cuda (rehearsal on $DEVICE)"; skip nccl-allreduce "NCCL needs --device cuda"
else
  if [ -f "$demo/runs/gpu/metrics.jsonl" ]; then
    stage nccl-train 30 "$HASTE" train "$cfg" --device cuda --exp-name nccl --threads 2 --dist-backend nccl \
      --max-train-steps "$NCCL_STEPS" --checkpointing-steps 100000 --sampling-steps 100000 --set log-every=10
    grep -h "gradients summed on the GPUs with NCCL" "$demo/runs/nccl/log.txt" >> "$OUT/nccl-train.log" 2>/dev/null \
      || echo "log.txt does not say NCCL summed the gradients" >> "$OUT/nccl-train.log"
  else
    skip nccl-train "no stage-3 GPU run to compare with"
  fi
  stage nccl-allreduce 15 "$HASTE" bench allreduce --device cuda --dist-backend nccl --model SiT-B/2 --reps 5 --threads 2
fi
if command -v mpirun > /dev/null; then
  weak="$work/weak"; rm -rf "$weak" && mkdir -p "$weak"
  per=$(( (t0 + BUDGET - $(date +%s) - 5) / $(echo $WEAK_RANKS | wc -w) ))   # what the NCCL stages left, shared
  [ "$per" -ge 10 ] || per=10
  for n in $WEAK_RANKS; do
    [ $(( n * WEAK_THREADS )) -le "$cpus" ] || { skip "weak-np$n" "$n ranks × $WEAK_THREADS threads > $cpus cores"; continue; }
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 stage "weak-np$n" "$per" \
      mpirun --oversubscribe --bind-to none -np "$n" "$HASTE" train "$cfg" --device cpu --threads "$WEAK_THREADS" --enc-type none \
      --model SiT-S/2 --set hidden-size=384 --set depth=12 --set num-heads=6 --batch-size $(( 2 * n )) \
      --max-train-steps "$WEAK_STEPS" --checkpointing-steps 100000 --sampling-steps 100000 --set log-every=1 \
      --set sample-count=1 --set sample-num-steps=1 --output-dir "$weak" --exp-name "np$n"   # previews (steps 1, last): 1 sample, 1 step
  done
  cat > "$work/weak.py" <<'EOF'
import json, os, sys
weak, ranks, threads, out = sys.argv[1], [int(n) for n in sys.argv[2].split()], int(sys.argv[3]), sys.argv[4]
rows = []
for n in ranks:
    p = os.path.join(weak, f"np{n}", "metrics.jsonl")
    last = [json.loads(l) for l in open(p) if l.strip()][-1] if os.path.exists(p) else None
    if last: rows.append({"ranks": n, "threads": threads, "global_img_per_s": last["img_per_s"], "per_rank_img_per_s": last["img_per_s"] / n})
base = next((r["per_rank_img_per_s"] for r in rows if r["ranks"] == 1), None)
for r in rows: r["efficiency"] = r["per_rank_img_per_s"] / base if base else None
json.dump({"model": "SiT-S/2 on 28x28 demo data (196 tokens)", "rows": rows, "load_avg": os.getloadavg()}, open(out, "w"), indent=1)
for r in rows:
    eff = f"{100 * r['efficiency']:.0f} %" if r["efficiency"] else "-"
    print(f"weak scaling SiT-S/2: {r['ranks']} ranks x {threads} threads: {r['global_img_per_s']:.2f} img/s, "
          f"{r['per_rank_img_per_s']:.2f} per rank, efficiency {eff}")
EOF
  python3 "$work/weak.py" "$weak" "$WEAK_RANKS" "$WEAK_THREADS" "$OUT/weak_scaling.json" > "$OUT/weak-scaling.log" 2>&1
else
  skip weak-scaling "no mpirun on this node (Open MPI: apt-get install openmpi-bin)"
fi

# --- 6. issue 12's other figures: bf16 vs float32 loss curves, sampling speed (a budget of its own) -----------------
note "stage 5 took $(( $(date +%s) - t0 ))s"
t0=$(date +%s); BUDGET=$ISSUE12_BUDGET                 # boxed() now counts stage 6's seconds
# 6a. SiT-B/2 (denoising only: the demo teacher's 64 tokens do not match B/2's 196) on the demo data, batch 32,
# 28×28 pixels (196 tokens),
# $PRECISION_STEPS steps: float32 twice (seeds 0 and 1: the run-to-run noise) and bf16 once (seed 0).
prec="$work/precision"; rm -rf "$prec" && mkdir -p "$prec"
for run in fp32-s0:no:0 bf16-s0:bf16:0 fp32-s1:no:1; do
  IFS=: read -r name mp seed <<< "$run"
  read -r pm ph pd pn <<< "$PRECISION_MODEL"
  stage "precision-$name" 100 "$HASTE" train "$cfg" --device "$DEVICE" --threads 2 --enc-type none --model "$pm" \
    --set hidden-size="$ph" --set depth="$pd" --set num-heads="$pn" --mixed-precision "$mp" --seed "$seed" \
    --max-train-steps "$PRECISION_STEPS" --checkpointing-steps 100000 --sampling-steps 100000 --set log-every=1 \
    --set sample-count=1 --set sample-num-steps=1 --output-dir "$prec" --exp-name "$name"
done
cat > "$work/precision.py" <<'EOF'
import json, sys
prec, out = sys.argv[1], sys.argv[2]
def load(name):
    return {r["step"]: r["loss"] for r in map(json.loads, filter(str.strip, open(f"{prec}/{name}/metrics.jsonl"))) if "loss" in r}
a, b, h = load("fp32-s0"), load("fp32-s1"), load("bf16-s0")
steps = sorted(set(a) & set(b) & set(h))
assert len(steps) >= 3, f"only {len(steps)} common steps"
def smooth(d, w=20):   # trailing means over w steps: the curve a researcher looks at
    return [sum(d[s] for s in steps[max(0, i - w + 1):i + 1]) / (i + 1 - max(0, i - w + 1)) for i in range(len(steps))]
sa, sb, sh = smooth(a), smooth(b), smooth(h)
skip = len(steps) // 10                       # the first steps (loss falling fast) dominate any absolute gap
noise = max(abs(x - y) / y for x, y in zip(sb[skip:], sa[skip:]))
gap = max(abs(x - y) / y for x, y in zip(sh[skip:], sa[skip:]))
tail = lambda c: sum(c[-len(c) // 4:]) / len(c[-len(c) // 4:])
v = {"steps": len(steps), "seed_to_seed_max_rel": noise, "bf16_vs_fp32_max_rel": gap,
     "tail_fp32_s0": tail(sa), "tail_fp32_s1": tail(sb), "tail_bf16_s0": tail(sh),
     "first_steps_rel_bf16_vs_fp32": [abs(h[s] - a[s]) / a[s] for s in steps[:5]],
     "finite": all(x == x and abs(x) != float("inf") for x in h.values())}
# Within run-to-run noise: the bf16 curve stays as close to float32 (same seed) as two float32 seeds stay to each other.
v["passed"] = v["finite"] and gap <= max(1.5 * noise, 0.01)
json.dump({"verdict": v, "step": steps, "fp32_s0": [a[s] for s in steps], "fp32_s1": [b[s] for s in steps],
           "bf16_s0": [h[s] for s in steps]}, open(out, "w"), indent=1)
print(f"bf16 vs float32 loss curve ({sys.argv[3]}, {len(steps)} steps, 20-step means after step {steps[skip]}): max rel gap "
      f"{gap:.4f} vs seed-to-seed {noise:.4f}; last-quarter means fp32 {v['tail_fp32_s0']:.4f} / {v['tail_fp32_s1']:.4f}, "
      f"bf16 {v['tail_bf16_s0']:.4f}: {'WITHIN NOISE' if v['passed'] else 'OUTSIDE NOISE'}")
sys.exit(0 if v["passed"] else 1)
EOF
stage precision-compare 20 python3 "$work/precision.py" "$prec" "$OUT/precision_verdict.json" "${PRECISION_MODEL%% *}"
# 6b. sampling: haste generate (SDE, CFG 1.65 for t ≤ 0.72, as the acceptance asks) beside the reference sampler in
# PyTorch (bench_gpu_generate.py, which also writes the shared random weights), $GEN_STEPS steps, batch $GEN_BATCH.
gen="$work/generate"; rm -rf "$gen" && mkdir -p "$gen"
stage generate-torch "$GEN_BOX" "$PYTHON" "$repo/Scripts/bench_gpu_generate.py" --device "$DEVICE" --model "$GEN_MODEL" \
  --steps "$GEN_STEPS" --batch "$GEN_BATCH" --bf16 --write-weights "$gen"
grep '^{' "$OUT/generate-torch.log" > "$OUT/generate_torch.jsonl" 2>/dev/null
gen_args=(--device "$DEVICE" --ckpt "$gen/$(echo "$GEN_MODEL" | tr 'A-Z/' 'a-z-').safetensors" --model "$GEN_MODEL"
          --resolution 256 --num-classes 1000 --mode sde --cfg-scale 1.65 --guidance-high 0.72 --vae ft-ema
          --vae-weights "$gen/sd-vae.safetensors")   # the default threads: the sampler's host work between model calls uses them
# The sampler's host work between two model calls (float64 state, noise, CFG: SamplerArithmetic.swift) on this node's
# CPU, beside the reference sampler's body on the CPU (10 CFG steps at [64, 4, 32, 32], a fixed velocity).
stage generate-sampler-host 60 "$HASTE" bench ops --only "sde sampler host" --reps 10
stage generate-sampler-host-torch 60 "$PYTHON" "$repo/Scripts/bench_torch.py" --only "sde sampler host" --reps 10
# A 2-step warm-up (kernels compiled, cuBLAS up), then the timed run, for float32 and bf16.
warm='"$0" generate "${@:3}" --num-fid-samples 2 --per-proc-batch-size 2 --num-steps 2 --sample-dir "$1-warm" \
  --mixed-precision "$2" > /dev/null 2>&1; "$0" generate "${@:3}" --num-fid-samples "$GEN_BATCH" \
  --per-proc-batch-size "$GEN_BATCH" --num-steps "$GEN_STEPS" --sample-dir "$1" --mixed-precision "$2"'
export GEN_BATCH GEN_STEPS
for mp in no bf16; do
  stage "generate-haste-$mp" "$GEN_BOX" bash -c "$warm" "$HASTE" "$gen/samples-$mp" "$mp" "${gen_args[@]}"
done
# The sampler alone (generate's sampling of one batch, no VAE, no PNGs): a guided and an unguided step apart, and the
# images/s of HASTE's whole run (250 SDE steps, 177 guided) from them.
stage generate-bench-sample 90 "$HASTE" bench sample --device "$DEVICE" --models "$GEN_MODEL" --batches "$GEN_BATCH" \
  --mixed-precision bf16 --steps-per-call 4 --reps 3
# Where generate's time goes: GPU time per kernel and GEMM of a short run (GEN_PROFILE_STEPS steps and the decode).
for mp in bf16 no; do
  HASTE_CUDA_PROFILE=1 stage "generate-profile-$mp" 60 "$HASTE" generate "${gen_args[@]}" --num-fid-samples "$GEN_BATCH" \
    --per-proc-batch-size "$GEN_BATCH" --num-steps "${GEN_PROFILE_STEPS:-5}" --sample-dir "$gen/profile-$mp" --mixed-precision "$mp"
done
# float32 with the float32 FMA attention instead of the TF32 one (what float32 sampling ran before 6375ac8); last,
# so a short stage-6 budget cuts it first (the float32 profile above already times the TF32 kernel).
HASTE_FLASH_TF32=0 stage "generate-haste-no-fp32attn" "$GEN_BOX" bash -c "$warm" "$HASTE" "$gen/samples-no-fp32attn" no "${gen_args[@]}"

# --- summary ------------------------------------------------------------------------------------------------------
{
  echo
  echo "== results"
  grep -h -E '^(PASS|FAIL)' "$OUT/selftest.log" 2>/dev/null || python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(('PASS' if d['passed'] else 'FAIL') + ': selftest, failures: ' + ', '.join(d['failures']))" "$OUT/selftest.json" 2>/dev/null || echo "selftest: no result"
  for sw in $ISOLATE_SWITCHES; do   # only after a failure
    [ -f "$OUT/selftest-$sw.log" ] && { grep -h -E '^(PASS|FAIL)' "$OUT/selftest-$sw.log" | sed "s/^/selftest with $sw=0: /" \
      || echo "selftest with $sw=0: no result"; }
  done
  grep -q -E ': (PASS|FAIL)' "$OUT/selftest-ways.log" 2>/dev/null \
    && grep -h -E ': (PASS|FAIL)' "$OUT/selftest-ways.log" | sed 's/^/selftest, way /' \
    || echo "selftest, each tuned way: no result"
  for v in "" -d16; do               # haste's bf16 against torch's CUDA autocast; -d16: D from the bf16 output
    label="torch fixture${v:+, D from bf16 out}"
    grep -q -E '^(PASS|FAIL): torch fixture' "$OUT/selftest-torch-fixture$v.log" 2>/dev/null \
      && grep -h -E "against torch|·e|^(PASS|FAIL): torch fixture" "$OUT/selftest-torch-fixture$v.log" | sed "s/^/$label: /" \
      || echo "$label: no result"
  done
  grep -h "demo loss curves" "$OUT/demo-compare.log" 2>/dev/null || echo "demo loss curves: no result"
  python3 - "$OUT" <<'EOF' 2>/dev/null || echo "bench: no result"
import glob, json, os, sys
out = sys.argv[1]
rows = {}
def lines(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []
ckpt = set()
for report in lines("bench_haste.jsonl"):
    for r in report.get("rows", []):
        op = r["op"].replace(" +ckpt", "")                                # checkpointed rows beside torch's plain ones
        rows.setdefault(op, {})["haste"] = r
        if op != r["op"]:
            ckpt.add(op)
for r in lines("bench_torch.jsonl"):
    if "error" not in r:
        rows.setdefault(r["op"], {})["torch"] = r
cols = [("ms", "ms_median", "{:.1f}"), ("TFLOP/s", "tflop_per_s", "{:.1f}"), ("peak MiB", "peak_memory_mb", "{:.0f}")]
print("training step (median)".ljust(42) + "".join(f"{side} {c}".rjust(15) for side in ("haste", "torch") for c, _, _ in cols))
for op in sorted(rows):
    cell = lambda side, key, fmt: fmt.format(rows[op][side][key]) if side in rows[op] and rows[op][side].get(key) is not None else "-"
    print((op + (" (haste +ckpt)" if op in ckpt else "")).ljust(42) + "".join(cell(side, key, fmt).rjust(15) for side in ("haste", "torch") for _, key, fmt in cols))
EOF
  # (grep -q first: a pipeline's status is its last command's, so `grep | sed || echo` never echoes)
  grep -q "per step:" "$OUT/profile-gpu.log" 2>/dev/null && grep -h -A 12 "per step:" "$OUT/profile-gpu.log" | sed 's/^/profile: /' \
    || echo "profile: no result"
  grep -h "host → device copies" "$OUT/profile-gpu.log" 2>/dev/null | sed 's/^/profile: /' | head -1
  # The tuner's decisions (each way's best time; the one kept), from the profile and the bench rows.
  grep -q "tuned " "$OUT/profile-gpu.log" "$OUT"/bench-haste*.log 2>/dev/null \
    && grep -h -o "tuned .*" "$OUT/profile-gpu.log" "$OUT"/bench-haste*.log 2>/dev/null | sort -u | cut -c1-600 | head -16 | sed 's/^/tuner: /' \
    || echo "tuner: no decision logged"
  # The kernels changed since the last GPU run, wherever they rank (the row dot: 4 rows a warp; the modulated
  # LayerNorm's by-warp backward: residual loads ahead of the stores; 2026-12-07).
  grep -h -E "attention_flash_row_dot|fused_mln_backward_dx_partials|fused_mln_forward_y16|layer_norm_forward_y16" \
    "$OUT/profile-gpu.log" 2>/dev/null | sed 's/^/profile, watched: /' | head -8
  # The epilogue GEMMs cuBLASLt ran (and why any were turned down).
  grep -q -E "\+bias|\+gelu|\+dgelu|\+bgradb|turned down" "$OUT/profile-gpu.log" 2>/dev/null \
    && grep -h -E "\+bias|\+gelu|\+dgelu|\+bgradb|turned down" "$OUT/profile-gpu.log" | head -12 \
    | sed 's/^/profile, epilogues: /' || echo "profile, epilogues: none in the profile"
  for k in forward backward-dkdv; do   # Nsight Compute: occupancy, issue rate and the main warp stalls
    log="$OUT/profile-gpu-ncu-$k.log"
    grep -q -E "Occupancy|ERR_|==ERROR==" "$log" 2>/dev/null && grep -h -E "^  [a-z_0-9]+ \(|Duration|Registers Per|Shared Memory Config|Block Limit|Theoretical Occupancy|Achieved Occupancy|Issue Slots Busy|No Eligible|Eligible Warps|Warp Cycles Per Issued|Compute \(SM\) Throughput|Memory Throughput|L1/TEX Hit|stalled|ERR_|==ERROR==" "$log" \
      | cut -c1-400 | head -40 | sed "s/^/ncu, $k: /" || echo "ncu, $k: no result"
  done
  for p in $PROFILE_VARIANTS; do   # the variants' own rows
    log="$OUT/profile-gpu-${p%%:*}.log"
    grep -q "per step:" "$log" 2>/dev/null && grep -h -E "^SiT|attention_flash|fused_mln|fused_gated|layer_norm|softmax|unary|reduce_sum|cast_f32_bf16|\+gelu|\+dgelu|\+bgradb|tensors made|host → device copies" "$log" | sed "s/^/profile, ${p#*:}: /" \
      || echo "profile, ${p#*:}: no result"
  done
  grep -q "per step:" "$OUT/profile-gpu-align.log" 2>/dev/null && grep -h -A 12 "per step:" "$OUT/profile-gpu-align.log" \
    | sed 's/^/profile +align: /' || echo "profile +align: no result"
  grep -q "per step:" "$OUT/profile-host.log" 2>/dev/null && grep -h -E "^SiT|per step:" "$OUT/profile-host.log" | sed 's/^/host only: /' \
    || echo "host only: no result"
  grep -h "weak scaling" "$OUT/weak-scaling.log" 2>/dev/null || echo "weak scaling: no result"
  grep -q "gradients: .* median" "$OUT/nccl-allreduce.log" 2>/dev/null \
    && grep -h "gradients: .* median" "$OUT/nccl-allreduce.log" | sed 's/^/NCCL, 1 rank: /' || echo "NCCL all-reduce: no result"
  python3 - "$demo/runs/gpu/metrics.jsonl" "$demo/runs/nccl/metrics.jsonl" <<'EOF' 2>/dev/null || echo "NCCL train: no result"
import json, sys
a, b = ({r["step"]: r for r in map(json.loads, filter(str.strip, open(p)))} for p in sys.argv[1:3])
steps = sorted(set(a) & set(b))
rel = max(abs(a[s]["loss"] - b[s]["loss"]) / max(abs(a[s]["loss"]), 1e-12) for s in steps)
s = steps[-1]
print(f"NCCL train (1 rank, {len(steps)} steps): max loss rel diff vs no NCCL {rel:.2e}; img/s {b[s]['img_per_s']:.1f} with NCCL, "
      f"{a[s]['img_per_s']:.1f} without (overhead {100 * (a[s]['img_per_s'] / b[s]['img_per_s'] - 1):.1f} %)")
EOF
  grep -h "bf16 vs float32 loss curve" "$OUT/precision-compare.log" 2>/dev/null || echo "bf16 vs float32 loss curve: no result"
  python3 - "$OUT" "$GEN_STEPS" <<'EOF' 2>/dev/null || echo "generate: no result"
import json, os, re, sys
out, steps = sys.argv[1], int(sys.argv[2])
for r in map(json.loads, filter(str.strip, open(os.path.join(out, "generate_torch.jsonl")))):
    if "seconds_per_step" in r:
        print(f"generate: {r['what']}: {r['seconds_per_step'] * 1000:.1f} ms/step, {r['images_per_s_at_250_steps']:.3f} img/s at 250 steps")
    elif "images_per_s" in r:
        print(f"generate: {r['what']}: {r['images_per_s']:.2f} img/s")
for mp in ("no", "no-fp32attn", "bf16"):
    p = os.path.join(out, f"generate-haste-{mp}.log")
    m = re.search(r"timing: (\d+) images; sampler ([\d.]+) s .*decode ([\d.]+) s", open(p).read()) if os.path.exists(p) else None
    if m:
        n, sampler, decode = int(m.group(1)), float(m.group(2)), float(m.group(3))
        label = "no, HASTE_FLASH_TF32=0" if mp == "no-fp32attn" else mp
        print(f"generate: haste --mixed-precision {label}, batch {n}, {steps} steps: {sampler / steps * 1000:.1f} ms/step, "
              f"{n / (250 * sampler / steps):.3f} img/s at 250 steps; decode {n / decode:.2f} img/s")
    else:
        print(f"generate: haste --mixed-precision {mp}: no result")
EOF
  for side in "" -torch; do
    label="generate: host work${side:+ (torch on the CPU)}"
    grep -h "^sde sampler host" "$OUT/generate-sampler-host$side.log" 2>/dev/null | sed "s/^/$label: /" || echo "$label: no result"
  done
  grep -q "ms a guided step" "$OUT/generate-bench-sample.log" 2>/dev/null \
    && grep -h -E "ms a guided step| bs[0-9]+ (un)?guided " "$OUT/generate-bench-sample.log" | sed "s/^/generate, bench sample bf16: /" \
    || echo "generate, bench sample bf16: no result"
  for mp in bf16 no; do
    grep -q "the whole run:" "$OUT/generate-profile-$mp.log" 2>/dev/null \
      && grep -h -A 14 "the whole run:" "$OUT/generate-profile-$mp.log" | sed "s/^/generate profile, $mp: /" \
      || echo "generate profile, $mp: no result"
  done
  echo "stage 6 took $(( $(date +%s) - t0 ))s; $failures stage(s) failed in all"
} | tee -a "$summary"
[ "$failures" = 0 ]
