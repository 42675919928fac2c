#!/usr/bin/env bash
# Times `haste bench ops` (release build) and the same rows in PyTorch (Scripts/bench_torch.py), then prints them
# side by side. Extra arguments go to both (e.g. --threads 2 --reps 20 --filter linear).
#   TORCH_PYTHON  python with torch==2.13.0 (default /opt/torchvenv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${TORCH_PYTHON:-/opt/torchvenv/bin/python}"
[ -x "$PY" ] || { echo "bench_compare: $PY not found; set TORCH_PYTHON to a python with torch installed" >&2; exit 1; }

swift build -c release --product haste
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.build/release/haste bench ops --json "$@" > "$tmp/haste.json"
"$PY" Scripts/bench_torch.py --json "$@" > "$tmp/torch.json"

"$PY" - "$tmp/haste.json" "$tmp/torch.json" <<'PYEOF'
import json
import sys

haste, torch = (json.load(open(p)) for p in sys.argv[1:3])
theirs = {r["op"]: r for r in torch["rows"]}
cells = [["op", "shape", "haste ms", "torch ms", "haste rate", "torch rate", "torch/haste time"]]
for r in haste["rows"]:
    t = theirs.get(r["op"])
    cells.append([r["op"], r["shape"], f"{r['ms_median']:.3f}", f"{t['ms_median']:.3f}" if t else "-",
                  f"{r['rate']:.1f} {r['unit']}", f"{t['rate']:.1f} {t['unit']}" if t else "-",
                  f"{t['ms_median'] / r['ms_median']:.2f}x" if t else "-"])
widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
print(f"threads {haste['threads']}, torch {torch.get('torch', '?')}; torch/haste > 1 means haste is faster")
for c in cells:
    print("  ".join(c[i].ljust(widths[i]) if i < 2 else c[i].rjust(widths[i]) for i in range(len(c))))
mine = {r["op"]: r for r in haste["rows"]}
if "sgemm (cblas)" in mine and "linear fwd" in mine:
    print(f"haste linear fwd = {100 * mine['linear fwd']['rate'] / mine['sgemm (cblas)']['rate']:.0f}% of raw sgemm")
PYEOF
