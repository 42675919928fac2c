#!/usr/bin/env bash
# A newcomer's first command: install what is missing, build release, then the built-in demo:
#   1. `haste train-teacher configs/demo.yaml` — a small DINOv2-architecture ViT trained on Fashion-MNIST
#      (no DINOv2 weights can be downloaded offline; cached in runs/demo-teacher.safetensors, ~1 minute);
#   2. `haste train configs/demo.yaml` — a small SiT trained with HASTE (attention + projection alignment,
#      early stop at step 1000) on 2 CPU cores, writing runs/demo/{samples/*.png, loss.png, metrics.jsonl, ...}.
# Extra arguments go to `haste train` (e.g. --max-train-steps 200 for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."

Scripts/setup.sh
swift build -c release --product haste
haste=.build/release/haste
"$haste" doctor | head -n 3

start=$(date +%s)
"$haste" train-teacher configs/demo.yaml
"$haste" train configs/demo.yaml "$@"
echo "demo finished in $(( $(date +%s) - start )) s: sample grids in runs/demo/samples/, loss curve runs/demo/loss.png"
