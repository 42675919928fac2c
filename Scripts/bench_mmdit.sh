#!/usr/bin/env bash
# MMDiT-XL/2 text-to-image training step (forward + HASTE loss + backward, no optimizer) in haste (release build)
# vs PyTorch eager float32, on this machine, in the same run: one process per measurement, alternating haste and
# torch, ROUNDS times; each process reports the median of REPS steps after one warm-up step.
#
#   Scripts/bench_mmdit.sh [BATCH (2)]
# Environment: ROUNDS (3), REPS (3), THREADS (nproc), TORCH_PYTHON (/work/venv-tok/bin/python, torch 2.13.0 cpu).
# Rows: Sources/haste/Commands/BenchTrainMMDiT.swift and Scripts/bench_torch_mmdit.py.
set -euo pipefail
cd "$(dirname "$0")/.."
B="${1:-2}"
PY="${TORCH_PYTHON:-/work/venv-tok/bin/python}"
ROUNDS="${ROUNDS:-3}" REPS="${REPS:-3}" THREADS="${THREADS:-$(nproc)}"
swift build -c release --product haste >/dev/null
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs; threads $THREADS; batch $B; $ROUNDS rounds × median of $REPS steps"
for r in $(seq "$ROUNDS"); do
    h=$(.build/release/haste bench train --only "MMDiT-XL/2 fwd+bwd bs$B" --threads "$THREADS" --reps "$REPS" --warmup 1 --json)
    t=$("$PY" Scripts/bench_torch_mmdit.py --batch "$B" --threads "$THREADS" --reps "$REPS" --warmup 1 --json)
    echo "haste $h"
    echo "torch $t"
    "$PY" - "$r" "$h" "$t" <<'PYEOF'
import json, sys
h, t = (json.loads(s) for s in sys.argv[2:4])
hr, tr = h["rows"][0], t["rows"][0]
print("round %s: haste %.2f s (min %.2f, peak RSS %.0f MiB)  torch %.2f s (min %.2f, peak RSS %.0f MiB)  haste/torch %.2f"
      % (sys.argv[1], hr["ms_median"] / 1e3, hr["ms_min"] / 1e3, h["peak_rss_mb"], tr["ms_median"] / 1e3,
         tr["ms_min"] / 1e3, t["peak_rss_mb"], hr["ms_median"] / tr["ms_median"]))
PYEOF
done
