#!/usr/bin/env python3
"""The sweep of `Scripts/bench_compare.sh sweep` (issue #15 item 4): haste and PyTorch over SiT sizes x batch sizes.

Per model the batches run in increasing order; per row and round, haste's row and then PyTorch's, each in a process
of its own (`haste bench train --sweep --only ROW --json`, `bench_torch_train.py --sweep --only ROW --json`) under
bench_compare.sh's `measured` (waits for a quiet machine, records the CPU share other processes took). Each side skips
a row whose predicted peak RSS (a fixed part plus a part per image, fitted to that side's smaller batches) exceeds 80%
of MemAvailable, the rule of `haste bench train --sweep`; a failed row skips that side's larger batches. GFLOP/s uses
the analytic FLOP count (SiTConfig.trainingFLOPs, the same for both sides); "% peak" is of the float32 FMA peak
`haste doctor` measures (a large sgemm on the GEMM haste runs, on its threads), for both sides. Prints one table and writes
runs/bench/sweep.tsv (one line per side and row) and runs/bench/sweep.png, drawn by `haste plot --tsv`.

Run through bench_compare.sh (which builds haste and writes the `measured` helper), not directly.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_torch_train as btt   # noqa: E402  the torch rows, the FLOP count and the skip rule

SIDES = ("haste", "torch")
LABELS = {"haste": "haste", "torch": "PyTorch"}
TSV_COLUMNS = ["side", "model", "series", "batch", "step_ms", "img_per_s", "gflop_per_step", "gflops", "fma_peak_pct",
               "peak_tensor_mib", "peak_rss_mib", "others_cpu_pct", "skipped"]


def take_option(args, name):
    """(value of `name VALUE` or `name=VALUE` in args or None, args without it)."""
    rest, value, i = [], None, 0
    while i < len(args):
        if args[i] == name and i + 1 < len(args):
            value, i = args[i + 1], i + 2
            continue
        if args[i].startswith(name + "="):
            value = args[i][len(name) + 1:]
        else:
            rest.append(args[i])
        i += 1
    return value, rest


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--haste", required=True, help="the haste executable (release build)")
    p.add_argument("--measured", required=True, help="bench_compare.sh's measured.py")
    p.add_argument("--tmp", required=True, help="a folder for the rows' JSON reports")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--quiet-wait", default="60")
    p.add_argument("--torch-args", default="", help="extra arguments for the torch side only")
    p.add_argument("--out-dir", default="runs/bench")
    p.add_argument("common", nargs=argparse.REMAINDER, help="-- then arguments for both sides (--threads, --reps, ...)")
    args = p.parse_args()
    common = args.common[1:] if args.common[:1] == ["--"] else args.common
    models_text, common = take_option(common, "--sweep-models")
    batches_text, common = take_option(common, "--sweep-batches")
    args.models = (models_text or ",".join(btt.SWEEP_MODELS)).split(",")
    try:
        args.batches = sorted({int(b) for b in (batches_text or ",".join(map(str, btt.SWEEP_BATCHES))).split(",")})
    except ValueError:
        args.batches = []
    unknown = [m for m in args.models if m not in btt.MODELS]
    if unknown or not args.batches or args.batches[0] < 1:
        sys.exit(f"bench_sweep: --sweep-models takes {', '.join(btt.MODELS)} and --sweep-batches positive integers, "
                 f"comma-separated; got '{models_text}' and '{batches_text}'")
    args.common = common
    return args


def commands(args):
    torch_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_torch_train.py")
    extra = shlex.split(args.torch_args)

    def haste(model, batch, name):
        return [args.haste, "bench", "train", "--sweep", "--only", name, "--json", "--sweep-models", model,
                "--sweep-batches", str(batch)] + args.common

    def torch(model, batch, name):
        return [sys.executable, torch_script, "--sweep", "--only", name, "--json", "--sweep-models", model,
                "--sweep-batches", str(batch)] + args.common + extra
    return {"haste": haste, "torch": torch}


def sweep(args, peak, available):
    """[{side: row}] per (model, batch): each row's medians over rounds, or its skip reason."""
    run = commands(args)
    table = []
    for model in args.models:
        fixed = btt.fixed_mib(model)
        measured, stop = {s: [] for s in SIDES}, {s: None for s in SIDES}
        for batch in args.batches:
            name, gflop = btt.row_name(model, batch, False), btt.training_flops(model, batch) / 1e9
            rows = {}
            for side in SIDES:
                why = stop[side] or (available and btt.skip_reason(batch, btt.peak_model(measured[side], fixed), available))
                rows[side] = {"side": side, "model": model, "batch": batch, "series": f"{LABELS[side]} {model}",
                              "gflop_per_step": gflop, "skipped": why or "", "runs": []}
            for rnd in range(args.rounds):
                for side in SIDES:
                    row = rows[side]
                    if row["skipped"]:
                        continue
                    out = os.path.join(args.tmp, f"sweep-{side}-{len(table)}-{rnd}.json")
                    print(f"round {rnd + 1}: {side} {name}", file=sys.stderr)
                    done = subprocess.run([sys.executable, args.measured, args.quiet_wait, out] + run[side](model, batch, name))
                    if done.returncode != 0:
                        row["skipped"], stop[side] = f"failed: exit status {done.returncode}", f"not run: batch {batch} failed"
                        continue
                    with open(out) as f:
                        report = json.load(f)
                    row["runs"].append((report["rows"][0]["ms_median"], report.get("peak_rss_mb"), report.get("peak_tensor_mb"),
                                        report.get("others_cpu_pct", 0.0)))
            for side, row in rows.items():
                if row["skipped"] or not row["runs"]:
                    continue
                ms = statistics.median(r[0] for r in row["runs"])
                rss = [r[1] for r in row["runs"] if r[1] is not None]
                tensor = [r[2] for r in row["runs"] if r[2] is not None]
                row.update(step_ms=ms, img_per_s=batch / (ms * 1e-3), gflops=gflop / (ms * 1e-3),
                           fma_peak_pct=100 * gflop / (ms * 1e-3) / peak,
                           peak_rss_mib=statistics.median(rss) if rss else None,
                           peak_tensor_mib=statistics.median(tensor) if tensor else None,
                           others_cpu_pct=max(r[3] for r in row["runs"]))
                if rss:
                    measured[side].append((batch, row["peak_rss_mib"]))
            table.append(rows)
    return table


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_table(args, table, doctor, available):
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in sorted(doctor["cpu_flags"].items()))
    print(f"sweep: {doctor['cpu']} ({flags}); haste threads {doctor['threads']}; {args.rounds} round(s), medians; "
          f"% peak = of the float32 FMA peak haste doctor measured, {doctor['fma_peak_gflops']:.0f} GFLOP/s "
          f"(on paper {doctor.get('fma_peak_theoretical_gflops', float('nan')):.0f}); "
          f"MemAvailable {fmt(available, '.0f')} MiB; haste/torch img/s > 1: haste is faster; torch/haste RSS > 1: haste "
          "needs less memory")
    cells = [["row", "GFLOP/step", "haste ms", "torch ms", "haste img/s", "torch img/s", "haste/torch img/s",
              "haste GFLOP/s", "torch GFLOP/s", "haste %peak", "torch %peak", "haste tensor MiB", "haste RSS MiB",
              "torch RSS MiB", "torch/haste RSS", "others (max)"]]
    notes = []
    for rows in table:
        h, t = rows["haste"], rows["torch"]
        name = btt.row_name(h["model"], h["batch"], False)
        speed = h.get("img_per_s") / t["img_per_s"] if h.get("img_per_s") and t.get("img_per_s") else None
        memory = t["peak_rss_mib"] / h["peak_rss_mib"] if h.get("peak_rss_mib") and t.get("peak_rss_mib") else None
        others = [r["others_cpu_pct"] for r in (h, t) if "others_cpu_pct" in r]
        cells.append([name, f"{h['gflop_per_step']:.4g}", fmt(h.get("step_ms"), ".0f"), fmt(t.get("step_ms"), ".0f"),
                      fmt(h.get("img_per_s"), ".2f"), fmt(t.get("img_per_s"), ".2f"), fmt(speed, ".2f") + ("x" if speed else ""),
                      fmt(h.get("gflops"), ".1f"), fmt(t.get("gflops"), ".1f"), fmt(h.get("fma_peak_pct"), ".1f"),
                      fmt(t.get("fma_peak_pct"), ".1f"), fmt(h.get("peak_tensor_mib"), ".0f"), fmt(h.get("peak_rss_mib"), ".0f"),
                      fmt(t.get("peak_rss_mib"), ".0f"), fmt(memory, ".2f") + ("x" if memory else ""),
                      f"{max(others):.0f}%" if others else "-"])
        notes += [f"{name} {LABELS[r['side']]}: skipped: {r['skipped']}" for r in (h, t) if r["skipped"]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    for c in cells:
        print("  ".join(c[i].ljust(widths[i]) if i == 0 else c[i].rjust(widths[i]) for i in range(len(c))))
    for n in notes:
        print(n)


def write_tsv(path, table):
    with open(path, "w") as f:
        f.write("\t".join(TSV_COLUMNS) + "\n")
        for rows in table:
            for side in SIDES:
                r = rows[side]
                values = [r.get(k) for k in TSV_COLUMNS]
                f.write("\t".join("-" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in values) + "\n")


def main():
    args = parse()
    threads, _ = take_option(args.common, "--threads")
    doctor = json.loads(subprocess.run([args.haste, "doctor", "--json"] + (["--threads", threads] if threads else []),
                                       stdout=subprocess.PIPE, check=True, text=True).stdout)
    available = btt.mem_available_mib()
    table = sweep(args, doctor["fma_peak_gflops"], available)
    print_table(args, table, doctor, available)
    os.makedirs(args.out_dir, exist_ok=True)
    tsv, png = os.path.join(args.out_dir, "sweep.tsv"), os.path.join(args.out_dir, "sweep.png")
    write_tsv(tsv, table)
    print(f"wrote {tsv}")
    if not any(r.get("img_per_s") for rows in table for r in rows.values()):
        print("no row was measured: no plot", file=sys.stderr)
        return
    subprocess.run([args.haste, "plot", "--tsv", tsv, "--x", "batch", "--y", "img_per_s", "--series", "series", "--log-x",
                    "--log-y", "--title", "Training step: img/s vs batch, fp32 on the CPU", "--out", png], check=True, stdout=subprocess.DEVNULL)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
