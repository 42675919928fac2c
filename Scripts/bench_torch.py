#!/usr/bin/env python3
"""PyTorch timings of the rows of `haste bench ops` (Sources/haste/Commands/BenchOps.swift): same names, shapes,
napkin-math work, warm-up and repetitions, float32 on the CPU.

    /opt/torchvenv/bin/python Scripts/bench_torch.py [--threads 2] [--reps 10] [--warmup 2] [--json] [--filter TEXT]

To add a row, add it to ROWS below with the name used in BenchOps.swift. Scripts/bench_compare.sh joins the two
outputs by row name.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

N, TOKENS, HIDDEN, MLP_HIDDEN = 4, 256, 768, 3072   # SiT-B/2: batch 4, 256 tokens, hidden 768, 12 heads
ROWS_M = N * TOKENS
GEMM_FLOPS = 2.0 * ROWS_M * HIDDEN * MLP_HIDDEN
ACT, RES = [N, TOKENS, MLP_HIDDEN], [N, TOKENS, HIDDEN]
ACT_COUNT, RES_COUNT = N * TOKENS * MLP_HIDDEN, N * TOKENS * HIDDEN


def sgemm():
    a, b = torch.randn(ROWS_M, HIDDEN), torch.randn(MLP_HIDDEN, HIDDEN)
    c = torch.empty(ROWS_M, MLP_HIDDEN)
    return lambda: torch.mm(a, b.t(), out=c)


def linear_inputs(grad):
    x = torch.randn(*RES, requires_grad=grad)
    w = (torch.randn(MLP_HIDDEN, HIDDEN) * 0.02).requires_grad_(grad)
    b = (torch.randn(MLP_HIDDEN) * 0.02).requires_grad_(grad)
    return x, w, b


def linear_fwd():
    x, w, b = linear_inputs(False)
    return lambda: F.linear(x, w, b)


def linear_fwd_bwd():
    x, w, b = linear_inputs(True)
    dy = torch.randn(*ACT)
    return lambda: torch.autograd.grad(F.linear(x, w, b), (x, w, b), dy)


def gelu_fwd():
    x = torch.randn(*ACT)
    return lambda: F.gelu(x, approximate="tanh")


def gelu_fwd_bwd():
    x, dy = torch.randn(*ACT, requires_grad=True), torch.randn(*ACT)
    return lambda: torch.autograd.grad(F.gelu(x, approximate="tanh"), (x,), dy)


def binary(fn):
    def make():
        a, b = torch.randn(*RES), torch.randn(*RES)
        return lambda: fn(a, b)
    return make


# name, shape (as haste prints it), work (kind, amount), setup returning the timed closure
ROWS = [
    ("sgemm (cblas)", f"{ROWS_M}x{HIDDEN} · ({MLP_HIDDEN}x{HIDDEN})ᵀ", ("flops", GEMM_FLOPS), sgemm),
    ("linear fwd", f"{RES} → {MLP_HIDDEN}", ("flops", GEMM_FLOPS), linear_fwd),
    ("linear fwd+bwd", f"{RES} → {MLP_HIDDEN}", ("flops", 3 * GEMM_FLOPS), linear_fwd_bwd),
    ("geluTanh fwd", f"{ACT}", ("bytes", 8 * ACT_COUNT), gelu_fwd),
    ("geluTanh fwd+bwd", f"{ACT}", ("bytes", 20 * ACT_COUNT), gelu_fwd_bwd),
    ("add", f"{RES}", ("bytes", 12 * RES_COUNT), binary(torch.add)),
    ("mul", f"{RES}", ("bytes", 12 * RES_COUNT), binary(torch.mul)),
]


def measure(name, shape, work, setup, warmup, reps):
    body = setup()
    for _ in range(warmup):
        body()
    ms = []
    for _ in range(reps):
        start = time.perf_counter()
        body()
        ms.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(ms)
    kind, amount = work
    return {"op": name, "shape": shape, "ms_median": median, "ms_min": min(ms),
            "rate": amount / (median * 1e-3) / 1e9, "unit": "GFLOP/s" if kind == "flops" else "GB/s", "reps": reps}


def table(rows):
    cells = [["op", "shape", "ms (median)", "ms (min)", "rate"]] + [
        [r["op"], r["shape"], f"{r['ms_median']:.3f}", f"{r['ms_min']:.3f}", f"{r['rate']:.1f} {r['unit']}"]
        for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    return "\n".join("  ".join(c[i].ljust(widths[i]) if i < 2 else c[i].rjust(widths[i]) for i in range(5))
                     for c in cells)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--filter", default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [measure(*row, args.warmup, args.reps) for row in ROWS if args.filter is None or args.filter in row[0]]
    if args.json:
        print(json.dumps({"threads": args.threads, "device": "cpu", "torch": torch.__version__, "rows": rows}, indent=2))
        return
    print(f"torch {torch.__version__}: cpu, {args.threads} threads, median of {args.reps} after {args.warmup} warm-up")
    print(table(rows))


if __name__ == "__main__":
    main()
