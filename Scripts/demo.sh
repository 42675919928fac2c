#!/usr/bin/env bash
# A newcomer's first command: install what is missing, build release, check the machine (`haste doctor`),
# time the kernels (`haste bench ops`), then train the demo model once `haste train` and configs/demo.yaml exist.
set -euo pipefail
cd "$(dirname "$0")/.."

Scripts/setup.sh
swift build -c release --product haste
haste=.build/release/haste

echo "== haste doctor =="
"$haste" doctor
echo
echo "== haste bench ops =="
"$haste" bench ops

# The training step joins the demo by itself when its command and config land.
commands=$("$haste" --help)
if grep -qE '^ +train( |$)' <<<"$commands" && [ -f configs/demo.yaml ]; then
  echo
  echo "== haste train configs/demo.yaml =="
  "$haste" train configs/demo.yaml
else
  echo
  echo "demo: training not available yet (needs \`haste train\` and configs/demo.yaml)"
fi
