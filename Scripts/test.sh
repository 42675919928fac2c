#!/usr/bin/env bash
# The test command (README, .ci/run): setup, a debug build of everything including the tests, then the whole
# suite. Debug on purpose: it builds in about half the time of release and keeps assertions on; tests use tiny
# tensors, and timing lives in `haste bench`. Prints a summary; exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

Scripts/setup.sh
Scripts/fetch_inception.sh   # real TorchScript test material (cached; warns and continues when offline)
Scripts/fetch_clip_vocab.sh  # CLIP BPE vocabulary for the tokenizer tests (cached; warns and continues when offline)
Scripts/fetch_test_images.sh # real photographs for the preprocess tests (cached; warns and continues when offline)
# NVRTC from PyPI, so the CUDA kernel sources compile without a GPU (cached; warns and continues when offline).
nvrtc=$(Scripts/fetch_nvrtc.sh)
if [ -n "$nvrtc" ]; then export HASTE_CUDA_LIB_DIR="${HASTE_CUDA_LIB_DIR:+$HASTE_CUDA_LIB_DIR:}$nvrtc"; fi
swift build --build-tests

log=$(mktemp)
# Tests that compute FID reference statistics cache them: in a folder of this run's, not the user's ~/.cache/haste.
export HASTE_CACHE=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$HASTE_CACHE"' EXIT
status=0
swift test 2>&1 | tee "$log" || status=$?

echo
echo "== test summary =="
grep -E "✘ Test .* failed|Test run with|Executed [1-9][0-9]* tests?" "$log" | awk '!seen[$0]++' || echo "(no summary line found: the run stopped early)"
if [ "$status" -ne 0 ]; then echo "FAILED (swift test exit code $status)"; else echo "OK"; fi
exit "$status"
