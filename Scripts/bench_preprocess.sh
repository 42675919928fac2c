#!/usr/bin/env bash
# Acceptance numbers for `haste preprocess` (release build), on the same machine in the same run:
#  1. decode+ADM crop images/s on one core: haste vs PIL (Scripts/fixtures/preprocess.py's center_crop_arr)
#     over the same photos (Scripts/fetch_test_images.sh, repeated to N images);
#  2. VAE encode images/s at 256×256 (random full SD-VAE weights): haste vs Scripts/reference/vae.py (PyTorch);
#  3. training read throughput: HDF5Dataset vs the folder layout (ReferenceLayoutDataset).
# Usage: Scripts/bench_preprocess.sh [N=60]    Needs /opt/torchvenv (torch, Pillow, safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-60}
PY=${PY:-/opt/torchvenv/bin/python}
Scripts/fetch_test_images.sh
swift build -c release --product haste >/dev/null
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
i=0
for c in a b; do mkdir -p "$work/src/$c"; done
while [ $i -lt "$N" ]; do
    for f in .cache/test-images/*.png .cache/test-images/*.jpg; do
        [ $i -lt "$N" ] || break
        cls=$([ $((i % 2)) -eq 0 ] && echo a || echo b)
        ln -s "$PWD/$f" "$work/src/$cls/$(printf %04d $i)-$(basename "$f")"; i=$((i + 1))
    done
done
echo "== decode + ADM crop, 1 worker, $N images"
t0=$(date +%s.%N)
.build/release/haste preprocess --source "$work/src" --dest "$work/out" --stage convert --workers 1 --quiet >/dev/null
t1=$(date +%s.%N)
echo "haste: $(echo "$N / ($t1 - $t0)" | bc -l | xargs printf '%.1f') img/s (incl. PNG write)"
$PY - "$work/src" <<'PY'
import sys, time, glob
sys.path.insert(0, "Scripts/fixtures")
from preprocess import center_crop_arr
from PIL import Image
files = sorted(glob.glob(sys.argv[1] + "/*/*"))
t = time.time()
for f in files:
    Image.fromarray(center_crop_arr(Image.open(f).convert("RGB"), 256)).save("/tmp/_bench.png", compress_level=0)
print(f"PIL:   {len(files) / (time.time() - t):.1f} img/s (incl. PNG write)")
PY
echo "== VAE encode 256x256, random SD-VAE weights (set BENCH_VAE=FILE to use real ones)"
vae=${BENCH_VAE:-$work/vae.safetensors}
[ -f "$vae" ] || $PY - "$vae" <<'PY'
import sys, torch
sys.path.insert(0, "Scripts/reference")
from safetensors.torch import save_file
from vae import AutoencoderKL   # the PyTorch reference of spec/vae.md
m = AutoencoderKL()
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, sys.argv[1])
PY
M=${BENCH_ENCODE:-16}
t0=$(date +%s.%N)
.build/release/haste preprocess --dest "$work/out" --stage encode --vae-weights "$vae" --max-images "$M" --quiet >/dev/null
t1=$(date +%s.%N)
echo "haste: $(echo "$M / ($t1 - $t0)" | bc -l | xargs printf '%.2f') img/s ($M images incl. weight load, batch 8)"
$PY - "$vae" <<'PY'
import sys, time, torch
sys.path.insert(0, "Scripts/reference")
from vae import AutoencoderKL
from safetensors.torch import load_file
m = AutoencoderKL(); m.load_state_dict(load_file(sys.argv[1])); m.eval()
x = torch.rand(8, 3, 256, 256) * 2 - 1
with torch.no_grad():
    m.posterior(x[:1])
    t = time.time(); r = 0
    while time.time() - t < 20: m.posterior(x); r += 8
print(f"torch: {r / (time.time() - t):.2f} img/s (batch 8, {torch.get_num_threads()} threads)")
PY
echo "== training read throughput (images + moments)"
.build/release/haste preprocess --dest "$work/out" --stage encode --format both --vae-weights "$vae" --quiet >/dev/null
echo "(not implemented yet: time HDF5Dataset vs ReferenceLayoutDataset .batch() over $work/out)"
