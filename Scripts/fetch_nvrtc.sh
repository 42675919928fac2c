#!/usr/bin/env bash
# Fetches NVRTC (libnvrtc.so.12 and its builtins) from the PyPI wheel nvidia-cuda-nvrtc-cu12==12.9.86 into
# .cache/nvrtc/lib (never committed), so the tests and `haste selftest --device cuda --compile-only` compile every
# CUDA kernel source with no GPU and no CUDA toolkit (issue 11). NVRTC runs on any x86-64 Linux without a driver.
# A no-op when cached. Prints the lib folder on stdout when it is there (Scripts/test.sh adds it to
# HASTE_CUDA_LIB_DIR). Never fails: without network (or pip) it warns, and the NVRTC tests skip with a warning.
set -uo pipefail
cd "$(dirname "$0")/.."

version=12.9.86
wheel_sha256=210cf05005a447e29214e9ce50851e83fc5f4358df8b453155d5e1918094dcb4   # the manylinux x86_64 wheel
dir=.cache/nvrtc
lib=$dir/lib
if [ -f "$lib/libnvrtc.so.12" ] && ls "$lib"/libnvrtc-builtins.so.12.* >/dev/null 2>&1; then
    echo "$PWD/$lib"; exit 0
fi

warn() { echo "warning: $* — the NVRTC kernel-compile tests will be skipped" >&2; exit 0; }
[ "$(uname -m)" = x86_64 ] || warn "NVRTC is fetched for x86_64 only (this is $(uname -m)); set HASTE_CUDA_LIB_DIR to a folder with libnvrtc.so.12"
pip=""
for p in "${PIP:-}" pip3 pip "python3 -m pip"; do
    [ -n "$p" ] && $p --version >/dev/null 2>&1 && { pip=$p; break; }
done
[ -n "$pip" ] || warn "no pip found to fetch nvidia-cuda-nvrtc-cu12==$version"
mkdir -p "$dir"
echo "fetching nvidia-cuda-nvrtc-cu12==$version from PyPI (90 MB, once) into $dir" >&2
timeout 600 $pip download --no-deps --quiet --disable-pip-version-check --only-binary=:all: \
    --platform manylinux_2_12_x86_64 --python-version 3 -d "$dir" "nvidia-cuda-nvrtc-cu12==$version" >&2 \
    || warn "pip download nvidia-cuda-nvrtc-cu12==$version failed (offline?)"
wheel=$(ls "$dir"/nvidia_cuda_nvrtc_cu12-"$version"-*.whl 2>/dev/null | head -1)
[ -n "$wheel" ] || warn "no wheel downloaded"
if [ "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$wheel_sha256" ]; then rm -f "$wheel"; warn "$wheel has an unexpected SHA-256"; fi
tmp=$dir/lib.tmp-$$
rm -rf "$tmp"
python3 - "$wheel" "$tmp" <<'PY' || { rm -rf "$tmp"; warn "could not unpack NVRTC from $wheel"; }
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.startswith("nvidia/cuda_nvrtc/lib/") and ".alt." not in n]
    if not any(n.endswith("/libnvrtc.so.12") for n in names):
        sys.exit("no libnvrtc.so.12 in the wheel")
    os.makedirs(sys.argv[2])
    for n in names + [n for n in z.namelist() if n.endswith("License.txt")]:
        with open(os.path.join(sys.argv[2], os.path.basename(n)), "wb") as f:
            f.write(z.read(n))
PY
rm -rf "$lib" && mv "$tmp" "$lib" && rm -f "$wheel"
echo "cached $lib" >&2
echo "$PWD/$lib"
