#!/usr/bin/env bash
# haste vs PyTorch on this machine, same run, side by side (release build of haste).
#
#   Scripts/bench_compare.sh [ops] [ARGS...]   `haste bench ops` vs Scripts/bench_torch.py
#   Scripts/bench_compare.sh train [ARGS...]   `haste bench train` vs Scripts/bench_torch_train.py
#   Scripts/bench_compare.sh sweep [ARGS...]   `haste bench train --sweep` vs `bench_torch_train.py --sweep`: how cost
#                                              grows over SiT sizes x batch sizes (Scripts/bench_sweep.py; ARGS may
#                                              include --sweep-models M,... and --sweep-batches B,...); writes
#                                              runs/bench/sweep.tsv and runs/bench/sweep.png (drawn by `haste plot --tsv`)
#
# One process per row and side, interleaved (haste row, then the same torch row), so a disturbance hits both
# sides of a row alike and each process's peak RSS (getrusage ru_maxrss) belongs to one row (train prints it).
# ARGS go to both sides (e.g. --threads 2 --reps 20). Environment:
#   TORCH_PYTHON  python with torch==2.13.0 (default /opt/torchvenv/bin/python)
#   ROUNDS        repeat everything this many times (default 1); each figure is the median over rounds of the
#                 per-round medians, and "spread" (max/min − 1 over rounds) shows how disturbed the machine was
#   ROW_FILTER    run only the rows whose name contains this text
#   TORCH_ARGS    extra arguments for the torch side only (e.g. --explicit-attention for train)
#   QUIET_WAIT    before each run, wait up to this many seconds (default 60) for the CPUs to be ≥ 90% idle
# The machine is shared: "others" is the CPU time other processes took during a run, as a share of all CPUs
# (from /proc/stat minus the run's own getrusage); repeat (ROUNDS) when it is not near 0%.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${TORCH_PYTHON:-/opt/torchvenv/bin/python}"
[ -x "$PY" ] || { echo "bench_compare: $PY not found; set TORCH_PYTHON to a python with torch installed" >&2; exit 1; }
mode=ops
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then mode="$1"; shift; fi
case "$mode" in ops|train|sweep) ;; *) echo "bench_compare: unknown mode '$mode' (ops, train or sweep)" >&2; exit 64;; esac
ROUNDS="${ROUNDS:-1}"
read -r -a torch_extra <<< "${TORCH_ARGS:-}"

swift build -c release --product haste
HASTE=.build/release/haste
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/haste" "$tmp/torch"

# measured OUT CMD...: waits for quiet, runs CMD with stdout to OUT, then adds "others_cpu_pct" to OUT's JSON.
# (The script is kept in $tmp/measured.py: Scripts/bench_sweep.py runs it too.)
cat > "$tmp/measured.py" <<'PYEOF'
import json, os, resource, subprocess, sys, time

def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)              # busy, total jiffies (idle and iowait excluded from busy)

wait, out, cmd = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
deadline = time.time() + wait
while time.time() < deadline:
    b0, t0 = busy(); time.sleep(2); b1, t1 = busy()
    if (b1 - b0) <= 0.1 * (t1 - t0):
        break
hz, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count()
r0, (b0, _), w0 = resource.getrusage(resource.RUSAGE_CHILDREN), busy(), time.time()
with open(out, "w") as f:
    subprocess.run(cmd, stdout=f, check=True)
r1, (b1, _), w1 = resource.getrusage(resource.RUSAGE_CHILDREN), busy(), time.time()
own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
others = max(0.0, (b1 - b0) / hz - own) / ((w1 - w0) * ncpu)
report = json.load(open(out))
report["others_cpu_pct"] = 100 * others
json.dump(report, open(out, "w"), indent=2)
PYEOF
measured() { "$PY" "$tmp/measured.py" "${QUIET_WAIT:-60}" "$@"; }

if [ "$mode" = sweep ]; then
    "$PY" Scripts/bench_sweep.py --haste "$HASTE" --measured "$tmp/measured.py" --tmp "$tmp" --rounds "$ROUNDS" \
        --quiet-wait "${QUIET_WAIT:-60}" --torch-args "${TORCH_ARGS:-}" -- "$@"
    exit 0
fi

if [ "$mode" = ops ]; then torch_script=Scripts/bench_torch.py; else torch_script=Scripts/bench_torch_train.py; fi
mapfile -t rows < <("$HASTE" bench "$mode" --list)
# Rows haste has and the torch script lacks (train's "+stopped": Scripts/bench_gpu_torch.py has it) are skipped.
mapfile -t torch_rows < <("$PY" "$torch_script" --list)
for round in $(seq "$ROUNDS"); do
    for i in "${!rows[@]}"; do
        row="${rows[$i]}"
        [[ "$row" == *"${ROW_FILTER:-}"* ]] || continue
        if ! printf '%s\n' "${torch_rows[@]}" | grep -Fxq -- "$row"; then
            [ "$round" = 1 ] && echo "skipped: $row (not a row of $torch_script)" >&2
            continue
        fi
        echo "round $round: $row" >&2
        measured "$tmp/haste/$round-$i.json" "$HASTE" bench "$mode" --only "$row" --json "$@"
        measured "$tmp/torch/$round-$i.json" "$PY" "$torch_script" --only "$row" --json "$@" "${torch_extra[@]}"
    done
done

"$PY" - "$mode" "$tmp" <<'PYEOF'
import glob
import json
import os
import statistics
import sys

mode, tmp = sys.argv[1], sys.argv[2]


def collect(side):
    """op -> {shape, unit, runs: [(ms_median, rate, peak_rss_mb, others_cpu_pct)]}, in first-seen order."""
    rows, meta = {}, {}
    order = lambda p: tuple(int(x) for x in os.path.basename(p)[:-5].split("-"))   # round-row.json
    for path in sorted(glob.glob(f"{tmp}/{side}/*.json"), key=order):
        report = json.load(open(path))
        meta = report
        for r in report["rows"]:
            entry = rows.setdefault(r["op"], {"shape": r["shape"], "unit": r["unit"], "runs": []})
            entry["runs"].append((r["ms_median"], r["rate"], report.get("peak_rss_mb"), report.get("others_cpu_pct", 0)))
    return rows, meta


def summary(entry):
    """Median ms over rounds, the rate at that time (rate × ms is the row's fixed amount of work), the spread of
    the rounds, the median peak RSS and the most CPU other processes took during any round."""
    ms = [run[0] for run in entry["runs"]]
    median = statistics.median(ms)
    rate = entry["runs"][0][1] * entry["runs"][0][0] / median
    rss = [run[2] for run in entry["runs"] if run[2] is not None]
    return median, rate, max(ms) / min(ms) - 1, statistics.median(rss) if rss else None, max(run[3] for run in entry["runs"])


haste, hmeta = collect("haste")
torch, tmeta = collect("torch")
rounds = max(len(e["runs"]) for e in haste.values())
if mode == "ops":
    cells = [["op", "shape", "haste ms", "torch ms", "haste rate", "torch rate", "torch/haste time"]]
else:
    cells = [["row", "haste ms", "torch ms", "haste img/s", "torch img/s", "haste/torch img/s", "haste RSS MiB", "torch RSS MiB"]]
if rounds > 1:
    cells[0] += ["haste spread", "torch spread"]
cells[0] += ["others (max)"]
for op, h in haste.items():
    hm, hr, hs, hrss, ho = summary(h)
    t = torch.get(op)
    tm, tr, ts, trss, to = summary(t) if t else (None, None, None, None, 0)
    ratio = f"{tm / hm:.2f}x" if t else "-"
    if mode == "ops":
        row = [op, h["shape"], f"{hm:.3f}", f"{tm:.3f}" if t else "-", f"{hr:.1f} {h['unit']}",
               f"{tr:.1f} {t['unit']}" if t else "-", ratio]
    else:
        row = [op, f"{hm:.0f}", f"{tm:.0f}" if t else "-", f"{hr:.2f}", f"{tr:.2f}" if t else "-", ratio,
               f"{hrss:.0f}" if hrss else "-", f"{trss:.0f}" if trss else "-"]
    if rounds > 1:
        row += [f"{100 * hs:.0f}%", f"{100 * ts:.0f}%" if t else "-"]
    cells.append(row + [f"{max(ho, to):.0f}%"])
widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
left = 2 if mode == "ops" else 1
print(f"{mode}: threads haste {hmeta['threads']} / torch {tmeta.get('threads', '?')}, torch {tmeta.get('torch', '?')}, {rounds} round(s), medians; "
      + "others = CPU share other processes took during the row's runs; "
      + ("torch/haste time > 1 means haste is faster" if mode == "ops" else "haste/torch img/s > 1 means haste is faster")
      + ("; torch with explicit attention everywhere" if tmeta.get("explicit_attention") else ""))
for c in cells:
    print("  ".join(c[i].ljust(widths[i]) if i < left else c[i].rjust(widths[i]) for i in range(len(c))))
if mode == "ops" and "sgemm (cblas)" in haste and "linear fwd" in haste:
    print(f"haste linear fwd = {100 * summary(haste['linear fwd'])[1] / summary(haste['sgemm (cblas)'])[1]:.0f}% of raw sgemm")
PYEOF
