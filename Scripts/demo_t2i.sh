#!/usr/bin/env bash
# The text-to-image demo (issue 16), offline on 2 CPU cores:
#   1. `haste train-teacher configs/demo.yaml` — the SiT demo's DINOv2-architecture teacher (cached in runs/);
#   2. `haste train configs/demo-t2i.yaml` — a small MMDiT trained with HASTE on Fashion-MNIST with captions made from
#      the class names and four templates, conditioned through a small CLIP-architecture text encoder with RANDOM
#      FROZEN weights (no CLIP weights offline; saved as runs/demo-t2i/text_encoder.safetensors);
#   3. `haste generate --prompt …` — one column per prompt, the prompt written under it:
#      runs/demo-t2i/generated/<folder>.grid.png.
# Extra arguments go to `haste train` (e.g. --max-train-steps 200 for a quick look). Each phase's time is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

source Scripts/phases.sh

Scripts/setup.sh
Scripts/fetch_clip_vocab.sh   # the real CLIP BPE vocabulary (cached; offline: says what to do)
phase_done "setup (apt packages, vocabulary)"
swift build -c release --product haste
phase_done "release build"
haste=.build/release/haste

"$haste" train-teacher configs/demo.yaml
phase_done "teacher (train-teacher, cached)"
"$haste" train configs/demo-t2i.yaml "$@"
phase_done "MMDiT training with HASTE"

run=runs/demo-t2i
ckpt=$(ls "$run"/checkpoints/*.safetensors | sort | tail -n 1)
prompts=("a photo of a sneaker" "a photo of a pair of trousers" "a bag, product shot" "a photo of a dress"
         "a black and white picture of a sandal" "a photo of a pullover" "a small picture of a coat" "a sneaker, product shot")
args=()
for p in "${prompts[@]}"; do args+=(--prompt "$p"); done
"$haste" generate --ckpt "$ckpt" "${args[@]}" --num-fid-samples $((4 * ${#prompts[@]})) --per-proc-batch-size 32 \
  --mode ode --num-steps 50 --cfg-scale 4.0 --sample-dir "$run/generated" 2>&1 | tee "$run/generate.log"
phase_done "generate (8 prompts x 4, ODE 50 steps, CFG 4)"
grid=$(sed -n 's/^grid with the prompts: //p' "$run/generate.log" | tail -n 1)

phases_report "text-to-image demo phases"
echo "demo finished in $(( $(date +%s) - start )) s: prompt grid $grid, training previews in $run/samples/"
