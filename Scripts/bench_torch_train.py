#!/usr/bin/env python3
"""PyTorch timings of the rows of `haste bench train` (Sources/haste/Commands/BenchTrainRows.swift): one full
HASTE training step (zero-grad, teacher pass, draws, forward, loss, backward, clip 1.0, AdamW) with the models
and losses of Scripts/reference, float32 on the CPU; same names, batch sizes, warm-up and repetitions.

    /opt/torchvenv/bin/python Scripts/bench_torch_train.py [--threads N (all cores)] [--reps 3] [--warmup 1] [--json]
        [--only ROW | --list] [--explicit-attention]

Blocks whose logits are not aligned use F.scaled_dot_product_attention, as haste's do; --explicit-attention runs
the reference modules verbatim (explicit softmax(q·kᵀ)·v in every block, logits kept). The peak RSS printed is the
whole process's: `Scripts/bench_compare.sh train` runs one row per process.
"""
import argparse
import json
import os
import resource
import sys

import torch
import torch.nn.functional as F

from bench_torch import measure, table, use_sdpa          # Scripts/ is this script's folder, hence on sys.path
from reference import dinov2 as ref_dinov2, losses as ref_losses, sit as ref_sit

MODELS = {"SiT-S/2": (384, 6), "SiT-B/2": (768, 12)}        # hidden, heads; depth 12, patch 2 for both
BATCHES = [4, 16]
LATENT, IMAGE_SIDE, TEACHER_SIDE, NUM_CLASSES, TEACHER_BATCH = (4, 32, 32), 256, 224, 1000, 16
STUDENT_LAYERS, TEACHER_LAYERS = [4, 5, 6, 7], [8, 9, 10, 11]
PROJ_COEFF, ATTN_COEFF, CFG_PROB, LR, MAX_GRAD_NORM = 0.5, 0.5, 0.1, 1e-4, 1.0
TEACHER_DIM, TEACHER_HEADS = 768, 12
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
TEACHER_ROW = f"DINOv2-B fwd bs{TEACHER_BATCH}"


def row_name(model, batch, align):
    return f"{model} bs{batch}" + (" +align" if align else "")


def make_teacher(explicit):
    t = ref_dinov2.DinoVisionTransformer(patch=14, dim=TEACHER_DIM, depth=12, heads=TEACHER_HEADS, grid=16)
    torch.nn.init.trunc_normal_(t.pos_embed, std=0.02)
    if not explicit:
        for i, block in enumerate(t.blocks):
            if i not in TEACHER_LAYERS:
                use_sdpa(block.attn)
    return t.eval().requires_grad_(False)


def teacher_pass(teacher, images):
    """haste's Objective.teacherPass: /255, ImageNet mean/std, bicubic 256 → 224 (no antialias), then the reference
    DinoVisionTransformer.forward keeping only the aligned blocks' logits (class row/column dropped)."""
    with torch.no_grad():
        mean, std = MEAN.to(images.device), STD.to(images.device)    # the GPU bench passes CUDA images
        x = F.interpolate((images.float() / 255 - mean) / std, size=(TEACHER_SIDE, TEACHER_SIDE), mode="bicubic",
                          align_corners=False)
        x = teacher.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([teacher.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + teacher.pos_embed
        logits = {}
        for i, block in enumerate(teacher.blocks):
            x, l = block(x)
            if i in TEACHER_LAYERS:
                logits[i] = l[:, :, 1:, 1:]
        return teacher.norm(x)[:, 1:], logits


def random_images(batch):
    return torch.randint(0, 256, (batch, 3, IMAGE_SIDE, IMAGE_SIDE), dtype=torch.uint8)


def train_step(model_name, batch, align, explicit):
    def make():
        hidden, heads = MODELS[model_name]
        student = ref_sit.SiT(input_size=32, patch=2, in_channels=4, hidden=hidden, depth=12, heads=heads,
                              num_classes=NUM_CLASSES, encoder_depth=8, z_dims=(TEACHER_DIM,) if align else (),
                              projector_dim=2048)
        if not explicit:
            for i, block in enumerate(student.blocks):
                if not (align and i in STUDENT_LAYERS):
                    use_sdpa(block.attn)
        teacher = make_teacher(explicit) if align else None
        params = [p for p in student.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        images = random_images(batch) if align else None
        x0 = torch.randn(batch, *LATENT)
        labels = torch.arange(batch) * 37 % NUM_CLASSES
        attn_heads = min(heads, TEACHER_HEADS)

        def step():
            opt.zero_grad()
            feats, teacher_logits = teacher_pass(teacher, images) if align else (None, None)
            t, noise = torch.rand(batch), torch.randn_like(x0)
            y = torch.where(torch.rand(batch) < CFG_PROB, NUM_CLASSES, labels)
            alpha, sigma, _, _ = ref_losses.interpolant("linear", t.view(-1, 1, 1, 1))
            pred, logits, projections = student(alpha * x0 + sigma * noise, t, y)
            total = ref_losses.denoising_loss(pred, x0, noise, t, "linear")
            total.item()
            if align:
                proj = ref_losses.projection_loss(projections, [feats])
                attn = ref_losses.attention_loss(logits, teacher_logits, STUDENT_LAYERS, TEACHER_LAYERS, attn_heads)
                total = total + PROJ_COEFF * proj + ATTN_COEFF * attn
                proj.item(), attn.item()
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            opt.step()
        return step
    return make


def teacher_forward(explicit):
    def make():
        teacher, images = make_teacher(explicit), random_images(TEACHER_BATCH)
        return lambda: teacher_pass(teacher, images)
    return make


def rows(explicit):
    out = []
    for model in MODELS:
        for batch in BATCHES:
            for align in (False, True):
                shape = f"x [{batch}, 4, 32, 32]" + (f" + images [{batch}, 3, 256, 256]" if align else "")
                out.append((row_name(model, batch, align), shape, ("images", batch), train_step(model, batch, align, explicit)))
    out.append((TEACHER_ROW, f"images [{TEACHER_BATCH}, 3, 256, 256] → 224, logits of 8…11", ("images", TEACHER_BATCH),
                teacher_forward(explicit)))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))   # as haste: all cores
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--only", default=None, help="run only the row with exactly this name")
    p.add_argument("--list", action="store_true", help="print the row names and exit")
    p.add_argument("--json", action="store_true")
    p.add_argument("--explicit-attention", action="store_true", help="reference attention verbatim in every block")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    all_rows = rows(args.explicit_attention)
    if args.list:
        print("\n".join(r[0] for r in all_rows))
        return
    if args.only is not None and args.only not in [r[0] for r in all_rows]:
        sys.exit(f"--only '{args.only}' is not a row; rows are: {', '.join(r[0] for r in all_rows)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    results = [measure(*r, args.warmup, args.reps) for r in all_rows if args.only in (None, r[0])]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # Linux: KiB
    if args.json:
        print(json.dumps({"threads": args.threads, "device": "cpu", "torch": torch.__version__, "peak_rss_mb": peak,
                          "explicit_attention": args.explicit_attention, "rows": results}, indent=2))
        return
    print(f"torch {torch.__version__}: cpu, {args.threads} threads, median of {args.reps} steps after {args.warmup} "
          f"warm-up{', explicit attention everywhere' if args.explicit_attention else ''}")
    print(table(results))
    print(f"peak RSS {peak:.0f} MiB (whole process; use --only ROW for one row's peak)")


if __name__ == "__main__":
    main()
