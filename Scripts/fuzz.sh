#!/usr/bin/env bash
# Long fuzz campaigns of the file readers, out of process (issue #14, item 6):
#   Scripts/fuzz.sh N [--formats safetensors,npy,...] [--seed S] [--jobs J] [--timeout SEC] [--mem-mb MB] [--out DIR] [--no-build]
# Builds the release haste (unless --no-build), mutates N files per format from seed files (Tests/HasteTests/Fixtures,
# or generated), runs `haste inspect --verify` (and `haste convert` on a quarter of the torch files) on each under a
# timeout and a memory cap, and prints a table: format, mutants, ok / clean error / crash / timeout, max time, max RSS.
# Exit status 1 when anything crashed or timed out; those inputs stay in OUT/crashes (default .build/fuzz/crashes)
# with the command to reproduce them. The seed fixes the mutants: the same command makes the same files.
# The CI suite runs a short in-process version (Tests/HasteTests/HasteIO/Fuzz*.swift).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: Scripts/fuzz.sh N [--formats LIST] [--seed S] [--jobs J] [--timeout SEC] [--mem-mb MB] [--out DIR] [--no-build]" >&2
  echo "formats: safetensors npy npz npz-deflated pth pth-deflated legacy torchscript pickle png jpeg (default: all)" >&2
  exit 2
fi
count=$1; shift
build=1
args=()
for a in "$@"; do
  if [ "$a" = "--no-build" ]; then build=0; else args+=("$a"); fi
done
if [ "$build" = 1 ]; then
  swift build -c release --product haste >&2
fi
haste=.build/release/haste
[ -x "$haste" ] || { echo "fuzz: $haste is missing: run without --no-build, or swift build -c release --product haste" >&2; exit 2; }
exec python3 Scripts/fuzz.py "$count" --haste "$haste" "${args[@]}"
