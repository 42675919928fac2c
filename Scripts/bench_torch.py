#!/usr/bin/env python3
"""PyTorch timings of the rows of `haste bench ops` (Sources/haste/Commands/BenchOps.swift): same names, shapes,
napkin-math work, warm-up and repetitions, float32 on the CPU.

    /opt/torchvenv/bin/python Scripts/bench_torch.py [--threads N (all cores)] [--reps 10] [--warmup 2] [--json]
        [--filter TEXT | --only ROW | --list]

To add a row, add it to ROWS below with the name used in BenchOps.swift. Scripts/bench_compare.sh joins the two
outputs by row name.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from reference import sit as ref_sit   # Scripts/reference (this script's folder is on sys.path)

N, TOKENS, HIDDEN, MLP_HIDDEN = 4, 256, 768, 3072   # SiT-B/2: batch 4, 256 tokens, hidden 768, 12 heads
HEADS, HEAD_DIM = 12, 64
ROWS_M = N * TOKENS
GEMM_FLOPS = 2.0 * ROWS_M * HIDDEN * MLP_HIDDEN
ACT, RES = [N, TOKENS, MLP_HIDDEN], [N, TOKENS, HIDDEN]
ACT_COUNT, RES_COUNT = N * TOKENS * MLP_HIDDEN, N * TOKENS * HIDDEN
PROBS, QKV = [N, HEADS, TOKENS, TOKENS], [N, HEADS, TOKENS, HEAD_DIM]
PROB_COUNT = N * HEADS * TOKENS * TOKENS
# one attention GEMM (q·kᵀ or P·v); block: 4 token linears (24·N·T·D²), attention GEMMs, adaLN
ATTN_GEMM = 2.0 * N * HEADS * TOKENS * TOKENS * HEAD_DIM
BLOCK_FWD = 24.0 * N * TOKENS * HIDDEN ** 2 + 4.0 * N * TOKENS ** 2 * HIDDEN + 12.0 * N * HIDDEN ** 2
BLOCK_SHAPE = f"x [{N}, {TOKENS}, {HIDDEN}], c [{N}, {HIDDEN}]"


def sgemm():
    a, b = torch.randn(ROWS_M, HIDDEN), torch.randn(MLP_HIDDEN, HIDDEN)
    c = torch.empty(ROWS_M, MLP_HIDDEN)
    return lambda: torch.mm(a, b.t(), out=c)


ADAM_COUNT = 130_500_000   # SiT-B/2's parameter count; haste's "adamw step" row


def adamw_step():
    p = torch.nn.Parameter(torch.randn(ADAM_COUNT // 1000, 1000) * 0.02)
    p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW([p], lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)   # as bench_torch_train.py
    return opt.step


def gemm(m, n, k, trans_a, trans_b):
    """One float32 GEMM of a SiT-B/2 step, as BenchOps.gemmShapes: C[m, n] = op(A)·op(B)."""
    def make():
        a = torch.randn(k, m).t() if trans_a else torch.randn(m, k)
        b = torch.randn(n, k).t() if trans_b else torch.randn(k, n)
        c = torch.empty(m, n)
        return lambda: torch.mm(a, b, out=c)
    return make


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


def layer_norm_inputs(grad):
    x = torch.randn(*RES, requires_grad=grad)
    w = (torch.randn(HIDDEN) * 0.1 + 1).requires_grad_(grad)
    b = (torch.randn(HIDDEN) * 0.1).requires_grad_(grad)
    return x, w, b


def layer_norm_fwd():
    x, w, b = layer_norm_inputs(False)
    return lambda: F.layer_norm(x, (HIDDEN,), w, b, 1e-6)


def layer_norm_fwd_bwd():
    x, w, b = layer_norm_inputs(True)
    dy = torch.randn(*RES)
    return lambda: torch.autograd.grad(F.layer_norm(x, (HIDDEN,), w, b, 1e-6), (x, w, b), dy)


def softmax_fwd():
    x = torch.randn(*PROBS)
    return lambda: torch.softmax(x, -1)


def softmax_fwd_bwd():
    x, dy = torch.randn(*PROBS, requires_grad=True), torch.randn(*PROBS)
    return lambda: torch.autograd.grad(torch.softmax(x, -1), (x,), dy)


def qkv_inputs(grad):
    return [torch.randn(*QKV, requires_grad=grad) for _ in range(3)] + [torch.randn(*QKV)]


def explicit_attention(q, k, v):
    """What the HASTE reference does (Scripts/reference/sit.py Attention): the logits are materialised."""
    logits = (q * HEAD_DIM ** -0.5) @ k.transpose(-2, -1)
    return logits.softmax(-1) @ v, logits


def sdpa_fwd():
    q, k, v, _ = qkv_inputs(False)
    return lambda: F.scaled_dot_product_attention(q, k, v)


def sdpa_fwd_bwd():
    q, k, v, dy = qkv_inputs(True)
    return lambda: torch.autograd.grad(F.scaled_dot_product_attention(q, k, v), (q, k, v), dy)


def logits_fwd():
    q, k, v, _ = qkv_inputs(False)
    return lambda: explicit_attention(q, k, v)


def logits_fwd_bwd():
    q, k, v, dy = qkv_inputs(True)
    return lambda: torch.autograd.grad(explicit_attention(q, k, v)[0], (q, k, v), dy)


def use_sdpa(attn):
    """Swaps a reference Attention's explicit softmax(q·kᵀ)·v for F.scaled_dot_product_attention (no logits
    returned): what haste's blocks do when their logits are not asked for."""
    def forward(x):
        b, n, c = x.shape
        q, k, v = attn.qkv(x).reshape(b, n, 3, attn.heads, c // attn.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)), None
    attn.forward = forward


def sit_block(logits):
    def make():
        block = ref_sit.SiTBlock(HIDDEN, HEADS)      # nn.Linear default init: adaLN non-zero, like haste's row
        if not logits:
            use_sdpa(block.attn)
        x, c = torch.randn(*RES, requires_grad=True), torch.randn(N, HIDDEN, requires_grad=True)
        dy = torch.randn(*RES)
        wrt = list(block.parameters()) + [x, c]
        return lambda: torch.autograd.grad(block(x, c)[0], wrt, dy)
    return make


# conv2d forward rows (BenchOpsConv.swift convRows): name, x, Cout, kernel, stride, padding; with bias
CONV_ROWS = [
    ("conv3x3 128→128 256² fwd", [1, 128, 256, 256], 128, (3, 3), 1, (1, 1)),
    ("conv3x3 512→512 32² fwd", [1, 512, 32, 32], 512, (3, 3), 1, (1, 1)),
    ("conv3x3s2 128→128 256² fwd", [1, 128, 257, 257], 128, (3, 3), 2, (0, 0)),
    ("conv1x1 256→128 128² fwd", [1, 256, 128, 128], 128, (1, 1), 1, (0, 0)),
    ("conv3x3s2 288→384 35² fwd", [8, 288, 35, 35], 384, (3, 3), 2, (0, 0)),
    ("conv1x7 128→128 17² fwd", [8, 128, 17, 17], 128, (1, 7), 1, (0, 3)),
]


def conv_row(name, x, cout, k, stride, padding):
    oh, ow = (x[2] + 2 * padding[0] - k[0]) // stride + 1, (x[3] + 2 * padding[1] - k[1]) // stride + 1
    flops = 2.0 * x[0] * cout * oh * ow * x[1] * k[0] * k[1]
    shape = f"x {x} w {[cout, x[1], k[0], k[1]]} s{stride} p({padding[0]}, {padding[1]})"

    def make():
        inp = torch.randn(*x)
        w, b = torch.randn(cout, x[1], *k) * 0.02, torch.randn(cout) * 0.02
        return lambda: F.conv2d(inp, w, b, stride=stride, padding=padding)
    return (name, shape, ("flops", flops), make)


SAMPLER_BATCH, SAMPLER_STEPS = 64, 10   # haste's "sde sampler host" row (BenchOpsSampler.swift)


def sde_sampler_host():
    """The reference's euler_maruyama_sampler (REPA/HASTE samplers.py), linear path, CFG 1.65 on every step, state
    on the CPU like haste's, around a model that returns a fixed velocity: the sampler's own work per call."""
    shape = (SAMPLER_BATCH, 4, 32, 32)
    v = torch.randn(2 * SAMPLER_BATCH, *shape[1:])
    z, y = torch.randn(shape), torch.randint(0, 1000, (SAMPLER_BATCH,))

    def score(vt, xt, t):
        t = t.view(-1, 1, 1, 1)
        alpha, d_alpha, sigma, d_sigma = 1 - t, -torch.ones_like(t), t, torch.ones_like(t)
        ratio = alpha / d_alpha
        var = sigma ** 2 - ratio * d_sigma * sigma
        return (ratio * vt - xt) / var

    def drift(x, t_cur, y_cur):
        model_input = torch.cat([x] * 2, dim=0)
        time_input = torch.ones(model_input.size(0), dtype=torch.float64) * t_cur
        model_input.to(torch.float32), time_input.to(torch.float32), y_cur       # what the model would be given
        v_cur = v.to(torch.float64)
        d = v_cur - 0.5 * (2 * time_input).view(-1, 1, 1, 1) * score(v_cur, model_input, time_input)
        cond, uncond = d.chunk(2)
        return uncond + 1.65 * (cond - uncond)

    def body():
        t_steps = torch.cat([torch.linspace(1.0, 0.04, SAMPLER_STEPS, dtype=torch.float64),
                             torch.tensor([0.0], dtype=torch.float64)])
        x = z.to(torch.float64)
        y_cur = torch.cat([y, torch.full_like(y, 1000)], dim=0)
        for t_cur, t_next in zip(t_steps[:-2], t_steps[1:-1]):
            dt = t_next - t_cur
            eps = torch.randn_like(x)
            deps = eps * torch.sqrt(torch.abs(dt))
            x = x + drift(x, t_cur, y_cur) * dt + torch.sqrt(2 * t_cur) * deps
        t_cur, t_next = t_steps[-2], t_steps[-1]
        x = x + drift(x, t_cur, y_cur) * (t_next - t_cur)
    return body


# name, shape (as haste prints it), work (kind, amount), setup returning the timed closure
ROWS = [
    ("sgemm (cblas)", f"{ROWS_M}x{HIDDEN} · ({MLP_HIDDEN}x{HIDDEN})ᵀ", ("flops", GEMM_FLOPS), sgemm),
    ("adamw step", f"{ADAM_COUNT} parameters", ("bytes", 28 * ADAM_COUNT), adamw_step),
    ("gemm qkv fwd", f"{ROWS_M}x{HIDDEN} · ({3 * HIDDEN}x{HIDDEN})ᵀ", ("flops", 2.0 * ROWS_M * 3 * HIDDEN * HIDDEN),
     gemm(ROWS_M, 3 * HIDDEN, HIDDEN, False, True)),
    ("gemm proj fwd", f"{ROWS_M}x{HIDDEN} · ({HIDDEN}x{HIDDEN})ᵀ", ("flops", 2.0 * ROWS_M * HIDDEN * HIDDEN),
     gemm(ROWS_M, HIDDEN, HIDDEN, False, True)),
    ("gemm fc1 fwd", f"{ROWS_M}x{HIDDEN} · ({MLP_HIDDEN}x{HIDDEN})ᵀ", ("flops", GEMM_FLOPS),
     gemm(ROWS_M, MLP_HIDDEN, HIDDEN, False, True)),
    ("gemm fc2 fwd", f"{ROWS_M}x{MLP_HIDDEN} · ({HIDDEN}x{MLP_HIDDEN})ᵀ", ("flops", GEMM_FLOPS),
     gemm(ROWS_M, HIDDEN, MLP_HIDDEN, False, True)),
    ("gemm qkv dW", f"({ROWS_M}x{HIDDEN})ᵀ · {ROWS_M}x{3 * HIDDEN}", ("flops", 2.0 * ROWS_M * 3 * HIDDEN * HIDDEN),
     gemm(HIDDEN, 3 * HIDDEN, ROWS_M, True, False)),
    ("gemm qkv dX", f"{ROWS_M}x{3 * HIDDEN} · {3 * HIDDEN}x{HIDDEN}", ("flops", 2.0 * ROWS_M * 3 * HIDDEN * HIDDEN),
     gemm(ROWS_M, HIDDEN, 3 * HIDDEN, False, False)),
    ("linear fwd", f"{RES} → {MLP_HIDDEN}", ("flops", GEMM_FLOPS), linear_fwd),
    ("linear fwd+bwd", f"{RES} → {MLP_HIDDEN}", ("flops", 3 * GEMM_FLOPS), linear_fwd_bwd),
    ("geluTanh fwd", f"{ACT}", ("bytes", 8 * ACT_COUNT), gelu_fwd),
    ("geluTanh fwd+bwd", f"{ACT}", ("bytes", 20 * ACT_COUNT), gelu_fwd_bwd),
    ("add", f"{RES}", ("bytes", 12 * RES_COUNT), binary(torch.add)),
    ("mul", f"{RES}", ("bytes", 12 * RES_COUNT), binary(torch.mul)),
    ("layerNorm fwd", f"{RES}", ("bytes", 8 * RES_COUNT), layer_norm_fwd),
    ("layerNorm fwd+bwd", f"{RES}", ("bytes", 20 * RES_COUNT), layer_norm_fwd_bwd),
    ("softmax fwd", f"{PROBS}", ("bytes", 8 * PROB_COUNT), softmax_fwd),
    ("softmax fwd+bwd", f"{PROBS}", ("bytes", 20 * PROB_COUNT), softmax_fwd_bwd),
    ("attention fwd", f"q,k,v {QKV}", ("flops", 2 * ATTN_GEMM), sdpa_fwd),
    ("attention fwd+bwd", f"q,k,v {QKV}", ("flops", 6 * ATTN_GEMM), sdpa_fwd_bwd),
    ("attentionWithLogits fwd", f"q,k,v {QKV}", ("flops", 2 * ATTN_GEMM), logits_fwd),
    ("attentionWithLogits fwd+bwd", f"q,k,v {QKV}", ("flops", 6 * ATTN_GEMM), logits_fwd_bwd),
    ("SiT-B/2 block fwd+bwd", BLOCK_SHAPE, ("flops", 3 * BLOCK_FWD), sit_block(False)),
    ("SiT-B/2 block+logits fwd+bwd", BLOCK_SHAPE, ("flops", 3 * BLOCK_FWD), sit_block(True)),
 ("sde sampler host", f"{[SAMPLER_BATCH, 4, 32, 32]}, cfg, {SAMPLER_STEPS} steps", ("images", SAMPLER_BATCH), sde_sampler_host),
] + [conv_row(*row) for row in CONV_ROWS]


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
    scale, unit = {"flops": (1e9, "GFLOP/s"), "bytes": (1e9, "GB/s"), "images": (1, "img/s")}[kind]
    return {"op": name, "shape": shape, "ms_median": median, "ms_min": min(ms),
            "rate": amount / scale / (median * 1e-3), "unit": unit, "reps": reps}


def table(rows):
    cells = [["op", "shape", "ms (median)", "ms (min)", "rate"]] + [
        [r["op"], r["shape"], f"{r['ms_median']:.3f}", f"{r['ms_min']:.3f}", f"{r['rate']:.1f} {r['unit']}"]
        for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    return "\n".join("  ".join(c[i].ljust(widths[i]) if i < 2 else c[i].rjust(widths[i]) for i in range(5))
                     for c in cells)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))   # as haste: all cores
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--filter", default=None, help="only rows whose name contains this text")
    p.add_argument("--only", default=None, help="only the row with exactly this name")
    p.add_argument("--list", action="store_true", help="print the row names and exit")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.list:
        print("\n".join(row[0] for row in ROWS))
        return
    if args.only is not None and args.only not in [row[0] for row in ROWS]:
        sys.exit(f"--only '{args.only}' is not a row; rows are: {', '.join(row[0] for row in ROWS)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rows = [measure(*row, args.warmup, args.reps) for row in ROWS
            if (args.filter is None or args.filter in row[0]) and args.only in (None, row[0])]
    if args.json:
        print(json.dumps({"threads": args.threads, "device": "cpu", "torch": torch.__version__, "rows": rows}, indent=2))
        return
    print(f"torch {torch.__version__}: cpu, {args.threads} threads, median of {args.reps} after {args.warmup} warm-up")
    print(table(rows))


if __name__ == "__main__":
    main()
