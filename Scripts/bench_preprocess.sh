#!/usr/bin/env bash
# Acceptance numbers for `haste preprocess` (release build), on the same machine in the same run:
#  1. decode+ADM crop images/s on one core: haste vs PIL (Scripts/fixtures/preprocess.py's center_crop_arr)
#     over the same photos (Scripts/fetch_test_images.sh, repeated to N images);
#  2. VAE encode images/s at 256×256 (random full SD-VAE weights): haste vs Scripts/reference/vae.py (PyTorch);
#  3. training read throughput: HDF5Dataset vs the folder layout (ReferenceLayoutDataset), `haste bench data`.
# Usage: Scripts/bench_preprocess.sh [N=60]   (READ_ITEMS=1024: size of the read-throughput dataset)    Needs /opt/torchvenv (torch, Pillow, safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-60}
R=${READ_ITEMS:-1024}   # items of the read-throughput dataset
M=${BENCH_ENCODE:-16}   # images of the encode's steady state (after a first batch of 8)
[[ "$N" =~ ^[0-9]+$ && "$M" =~ ^[0-9]+$ && "$N" -ge $((8 + M)) ]] || {
    echo "bench_preprocess: N=$N images, but the encode benchmark reads 8 + BENCH_ENCODE ($M) of them: give N ≥ $((8 + M))" >&2; exit 64; }
[[ "$R" =~ ^[0-9]+$ && "$R" -ge 128 ]] || {
    echo "bench_preprocess: READ_ITEMS=$R: the read benchmark needs at least 2 batches of 64 (READ_ITEMS ≥ 128)" >&2; exit 64; }
PY=${TORCH_PYTHON:-/opt/torchvenv/bin/python}
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
# Same protocol on both sides: batches of 8 read from images/ after the weights are loaded; the first batch
# (cold: page faults, BLAS/oneDNN set-up) and the steady state (the next M images) are reported apart. haste's
# steady state = (time for 8 + M images − time for 8) / M, from two runs.
enc() { rm -rf "$work/out/vae-sd"; .build/release/haste preprocess --dest "$work/out" --stage encode --vae-weights "$vae" --max-images "$1" --quiet | sed -n 's/^encode: .*(\([0-9.]*\) s)$/\1/p'; }
t8=$(enc 8); tall=$(enc $((8 + M)))
echo "haste: first batch $(echo "8 / $t8" | bc -l | xargs printf '%.2f') img/s, steady $(echo "$M / ($tall - $t8)" | bc -l | xargs printf '%.2f') img/s (batch 8, $(nproc) threads)"
$PY - "$vae" "$((8 + M))" "$work/out/images" <<'PY'
import glob, sys, time, torch
import numpy as np
from PIL import Image
sys.path.insert(0, "Scripts/reference")
from vae import AutoencoderKL
from safetensors.torch import load_file
m = AutoencoderKL(); m.load_state_dict(load_file(sys.argv[1])); m.eval()
n = int(sys.argv[2])
files = sorted(glob.glob(sys.argv[3] + "/*/*.png"))[:n]
times = []
with torch.no_grad():
    for i in range(0, n, 8):
        t = time.time()
        x = torch.from_numpy(np.stack([np.array(Image.open(f)) for f in files[i:i + 8]])).permute(0, 3, 1, 2).float() / 127.5 - 1
        m.posterior(x)
        times.append(time.time() - t)
print(f"torch: first batch {8 / times[0]:.2f} img/s, steady {(n - 8) / sum(times[1:]):.2f} img/s (batch 8, {torch.get_num_threads()} threads)")
PY
echo "== training read throughput (images + moments, the trainer's batch reads), $R items"
# Same file shapes as the real pipeline (PNG 256×256×3 level 0, moments float32 [8, 32, 32]) without an hour of
# full-VAE encoding: a narrow VAE with the SD-VAE's 8× downsampling and 4 latent channels (config.json beside it).
mkdir -p "$work/narrow" "$work/rsrc/a" "$work/rsrc/b"
$PY - "$work/narrow" <<'PY'
import json, sys
sys.path.insert(0, "Scripts/reference")
from safetensors.torch import save_file
from vae import AutoencoderKL
cfg = {"block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 4}
m = AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_groups=4)
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, sys.argv[1] + "/diffusion_pytorch_model.safetensors")
json.dump(cfg, open(sys.argv[1] + "/config.json", "w"))
PY
i=0
while [ $i -lt "$R" ]; do
    for f in "$work"/src/*/*; do
        [ $i -lt "$R" ] || break
        ln -s "$(readlink "$f")" "$work/rsrc/$([ $((i % 2)) -eq 0 ] && echo a || echo b)/$(printf %05d $i)-$(basename "$f")"; i=$((i + 1))
    done
done
.build/release/haste preprocess --source "$work/rsrc" --dest "$work/read" --format both --vae-weights "$work/narrow/diffusion_pytorch_model.safetensors" --quiet
du -sh "$work/read/images" "$work/read/vae-sd" "$work/read/dataset.h5"
# Page cache dropped before each format where allowed (root on a real machine): cold reads; otherwise warm.
for fmt in folder hdf5; do
    sync; if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then echo "(page cache dropped: cold reads)"; else echo "(page cache not dropped: warm reads)"; fi
    .build/release/haste bench data --data-dir "$work/read" --format $fmt --batch-size 64 --batches $(( R / 64 - 1 ))
done
echo "(the reference loader on the same folder, warm: PIL PNG decode + np.load per item, one process, as one DataLoader worker)"
$PY - "$work/read" <<'PY'
import glob, json, sys, time
import numpy as np
from PIL import Image
root = sys.argv[1]
imgs = sorted(glob.glob(root + "/images/*/*.png")); feats = sorted(glob.glob(root + "/vae-sd/*/*.npy"))
n = min(len(imgs), 64 * 15)
t = time.time()
for i in range(n):
    x = np.array(Image.open(imgs[i])).transpose(2, 0, 1)
    f = np.load(feats[i])
print(f"reference (PIL + np.load): {n / (time.time() - t):.1f} items/s")
PY
echo "(warm, both formats in one process:)"
.build/release/haste bench data --data-dir "$work/read" --format both --batch-size 64 --batches $(( R / 64 - 1 ))
