#!/usr/bin/env bash
# Generation benchmark, haste vs PyTorch on the same machine in the same run (the `haste generate` issue's
# acceptance numbers): SiT-B/2 Euler ODE, batch 16, CFG 4.0 on every step (32 model rows per step), and SD-VAE
# decoding at 256x256 (batch 4), float32 on the CPU, the same random weights on both sides.
#   STEPS=50 (default)  THREADS=2  TORCH_PYTHON=/opt/torchvenv/bin/python  KEEP=dir (keep weights and samples)
# The sampler's cost per step is constant (guidance active everywhere), so a smaller STEPS gives the same
# seconds per step: images/s at 50 steps = 16 / (50 * seconds_per_step).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${TORCH_PYTHON:-/opt/torchvenv/bin/python}"
STEPS="${STEPS:-50}"
THREADS="${THREADS:-2}"
[ -x "$PY" ] || { echo "bench_generate: $PY not found; set TORCH_PYTHON to a python with torch" >&2; exit 1; }

swift build -c release --product haste >&2
dir="${KEEP:-$(mktemp -d)}"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"

echo "== PyTorch ($STEPS steps) ==" >&2
"$PY" Scripts/bench_torch_generate.py --steps "$STEPS" --threads "$THREADS" --write-weights "$dir" | tee "$dir/torch.jsonl"

echo "== haste ($STEPS steps) ==" >&2
rm -rf "$dir/samples"
.build/release/haste generate --ckpt "$dir/sit-b-2.safetensors" --model SiT-B/2 --resolution 256 --num-classes 1000 \
  --num-fid-samples 16 --per-proc-batch-size 16 --mode ode --num-steps "$STEPS" --cfg-scale 4.0 \
  --vae ft-ema --vae-weights "$dir/sd-vae.safetensors" --sample-dir "$dir/samples" --threads "$THREADS" 2> "$dir/haste.log"
grep timing "$dir/haste.log" | tee "$dir/haste.timing"

"$PY" - "$dir/torch.jsonl" "$dir/haste.timing" "$STEPS" <<'PYEOF'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
steps = int(sys.argv[3])
m = re.search(r"timing: (\d+) images; sampler ([\d.]+) s .*decode ([\d.]+) s", open(sys.argv[2]).read())
n, sampler, decode = int(m.group(1)), float(m.group(2)), float(m.group(3))
print(f"\nSiT-B/2 Euler ODE, batch {n}, CFG on every step, {steps} steps (images/s at 50 steps = batch / (50 * s/step)):")
print(f"  haste              {sampler / steps:8.3f} s/step  {n / (50 * sampler / steps):8.4f} img/s @50")
for r in rows:
    if "seconds_per_step" in r:
        print(f"  {r['what'].split('(')[1][:-1]:18s} {r['seconds_per_step']:8.3f} s/step  {r['images_per_s'] * steps / 50:8.4f} img/s @50")
print("SD-VAE decode 256x256:")
print(f"  haste              {n / decode:8.3f} img/s  (batches of 4, {decode:.1f} s for {n})")
for r in rows:
    if r.get("what", "").startswith("sd-vae"):
        print(f"  torch              {r['images_per_s']:8.3f} img/s  ({r['what']})")
print([r for r in rows if "torch" in r][0])
PYEOF
