#!/usr/bin/env python3
"""PyTorch side of `haste bench train --only "MMDiT-XL/2 fwd+bwd bsN"` (Sources/haste/Commands/BenchTrainMMDiT.swift):
one MMDiT-XL/2 HASTE text-to-image step without the optimizer, eager float32 on the CPU: zero-grad, forward on
x_t [B, 4, 32, 32] with a [B, 77, 768] context (logits of blocks 4..7, projector after block 8), denoising +
0.5 projection + 0.5 attention loss against random teacher tensors, backward. The model is Scripts/reference/mmdit.py
with the joint attention through F.scaled_dot_product_attention (as haste) and logits only for blocks 4..7.

    /work/venv-tok/bin/python Scripts/bench_torch_mmdit.py [--batch 2] [--threads N] [--reps 3] [--warmup 1] [--json]
"""
import argparse
import json
import os
import resource
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import measure, table            # noqa: E402
from reference import losses                       # noqa: E402
from reference.mmdit import MMDiT                  # noqa: E402

STUDENT, TEACHER = [4, 5, 6, 7], [8, 9, 10, 11]


def joint_forward(block, want_logits):
    def forward(ctx, x, c):
        B, L, D = ctx.shape
        qc, kc, vc, mc = block.context_block.pre_attention(ctx, c)
        qx, kx, vx, mx = block.x_block.pre_attention(x, c)
        q, k, v = (torch.cat([a, b], dim=1).transpose(1, 2) for a, b in ((qc, qx), (kc, kx), (vc, vx)))
        joint = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, -1, D)
        logits = None
        if want_logits:
            logits = (qx.transpose(1, 2) @ kx.transpose(1, 2).transpose(-2, -1)) * (D // block.x_block.heads) ** -0.5
        x = block.x_block.post_attention(x, joint[:, L:], mx)
        ctx = None if block.context_block.pre_only else block.context_block.post_attention(ctx, joint[:, :L], mc)
        return ctx, x, logits
    return forward


def setup(batch):
    def make():
        torch.manual_seed(0)
        model = MMDiT(input_size=32, z_dims=[768], encoder_depth=8)
        for i, block in enumerate(model.joint_blocks):
            block.forward = joint_forward(block, i in STUDENT)
        x0, noise, t = torch.randn(batch, 4, 32, 32), torch.randn(batch, 4, 32, 32), torch.rand(batch)
        context, feats = torch.randn(batch, 77, 768), torch.randn(batch, 256, 768)
        teacher = {j: torch.randn(batch, 12, 256, 256) for j in TEACHER}
        xt = (1 - t).view(-1, 1, 1, 1) * x0 + t.view(-1, 1, 1, 1) * noise

        def step():
            model.zero_grad(set_to_none=True)
            out, logits, projs = model(xt, t, context)
            den = losses.denoising_loss(out, x0, noise, t, "linear")
            proj = losses.projection_loss(projs, [feats])
            student = {i: l for i, l in enumerate(logits)}
            attn = sum(-(teacher[tj][:, :12].softmax(-1) * student[si][:, :12].log_softmax(-1)).sum(-1).mean()
                       for si, tj in zip(STUDENT, TEACHER)) / len(STUDENT)
            (den + 0.5 * proj + 0.5 * attn).backward()
        return step
    return make


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    row = measure(f"MMDiT-XL/2 fwd+bwd bs{a.batch}", f"x [{a.batch}, 4, 32, 32], context [{a.batch}, 77, 768]",
                  ("images", a.batch), setup(a.batch), a.warmup, a.reps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if a.json:
        print(json.dumps({"threads": a.threads, "torch": torch.__version__, "peak_rss_mb": peak, "rows": [row]}))
    else:
        print(table([row]))
        print(f"peak RSS {peak:.0f} MiB, torch {torch.__version__}, {a.threads} threads")


if __name__ == "__main__":
    main()
