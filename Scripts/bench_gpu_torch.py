#!/usr/bin/env python3
"""PyTorch on the GPU beside `haste bench train --device cuda`: one full HASTE training step (zero-grad, teacher pass,
draws, forward, loss, backward, clip 1.0, AdamW) of the reference SiT (Scripts/reference, the models and losses of
Scripts/bench_torch_train.py, same row names), in PyTorch eager: fp32, TF32 (`allow_tf32`, the reference's
--allow-tf32) and bf16 autocast with F.scaled_dot_product_attention in the blocks whose logits are not aligned
(what researchers run: issue 12). Timed with CUDA events after warm-up; peak GPU memory per row
(torch.cuda.max_memory_allocated after reset_peak_memory_stats) and the FLOP rate from haste's analytic count.

    python3 Scripts/bench_gpu_torch.py [--models SiT-B/2,SiT-XL/2] [--batches 16,64] [--precisions fp32,tf32,bf16]
        [--kinds plain,align,stopped] [--reps 5] [--warmup 2] [--jsonl FILE] [--list] [--device cpu] [--profile N]

Rows, as `haste bench train` names them: "<model> bs<batch>" (vanilla SiT, no teacher), "<model> bs<batch> +align"
(the reference DINOv2-B teacher at 224² with its attention logits, projection + attention alignment of student
blocks 4–7 with teacher blocks 8–11) and "<model> bs<batch> +stopped" (the HASTE run after its early stop: the
student keeps its projector, the teacher is not run, only the denoising loss, and the projector gets no gradient,
hence no AdamW update). Latents 4×32×32. FLOPs per step (`flop_per_step`, `tflop_per_s`): haste's formula
(SiTConfig+FLOPs.swift, DINOv2Config+FLOPs.swift), every matmul's MACs × 2, × 3 for the trained SiT.
--device cpu runs the same code on the CPU (wall clock, no GPU memory): with --models SiT-tiny/4 it checks the rows in
seconds. Each row is printed as it completes (and appended to --jsonl as one JSON line), so a time-boxed run keeps
what it did.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import use_sdpa                                       # noqa: E402
from bench_torch_train import (ATTN_COEFF, CFG_PROB, ENCODER_DEPTH, IMAGE_SIDE, LATENT, LR, MAX_GRAD_NORM,  # noqa: E402
                               MODELS, NUM_CLASSES, PROJ_COEFF, STUDENT_LAYERS, TEACHER_DIM, TEACHER_HEADS,
                               TEACHER_LAYERS, TEACHER_SIDE, make_teacher, teacher_pass)
from reference import losses as ref_losses, sit as ref_sit             # noqa: E402

KINDS = {"plain": "", "align": " +align", "stopped": " +stopped"}
PROJECTOR_DIM, TEACHER_PATCH, TEACHER_DEPTH, TEACHER_MLP = 2048, 14, 12, 4


def row_name(model, batch, kind):
    return f"{model} bs{batch}{KINDS[kind]}"


def sit_forward_macs(model_name, batch, projections):
    """SiTConfig.forwardMACs (Sources/HasteModels/SiT/SiTConfig+FLOPs.swift) for 32×32×4 latents."""
    d, depth, _, patch = MODELS[model_name]
    t, m, p = (32 // patch) ** 2, 4 * d, 4 * patch * patch
    embed = t * p * d + 256 * d + d * d
    block = 6 * d * d + 3 * t * d * d + 2 * t * t * d + t * d * d + 2 * t * d * m
    final = 2 * d * d + t * d * p
    h = PROJECTOR_DIM
    proj = t * (d * h + h * h + h * TEACHER_DIM) if projections else 0
    return batch * (embed + depth * block + final + proj)


def dinov2_forward_macs(batch):
    """DINOv2Config.forwardMACs (Sources/HasteModels/DINOv2/DINOv2Config+FLOPs.swift): DINOv2-B/14 at 224²."""
    d, n, p = TEACHER_DIM, (TEACHER_SIDE // TEACHER_PATCH) ** 2, 3 * TEACHER_PATCH ** 2
    t = n + 1
    block = 3 * t * d * d + 2 * t * t * d + t * d * d + 2 * t * d * TEACHER_MLP * d
    return batch * (n * p * d + TEACHER_DEPTH * block)


def step_flops(model_name, batch, kind):
    """haste's `TrainBenchmarks.flops`: 3 × 2 × the SiT's forward MACs, + 2 × the teacher's (+align only)."""
    sit = 6 * sit_forward_macs(model_name, batch, kind == "align")
    return float(sit + (2 * dinov2_forward_macs(batch) if kind == "align" else 0))


def make_step(model_name, batch, kind, precision, dev):
    hidden, depth, heads, patch = MODELS[model_name]
    align = kind == "align"
    student = ref_sit.SiT(input_size=32, patch=patch, in_channels=4, hidden=hidden, depth=depth, heads=heads,
                          num_classes=NUM_CLASSES, encoder_depth=ENCODER_DEPTH.get(model_name, 8),
                          z_dims=(TEACHER_DIM,) if kind != "plain" else (), projector_dim=PROJECTOR_DIM)
    for i, block in enumerate(student.blocks):
        if not (align and i in STUDENT_LAYERS):
            use_sdpa(block.attn)
    student = student.to(dev)
    teacher = make_teacher(False).to(dev) if align else None
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    if kind == "stopped":
        # After the early stop haste's student computes no projections and AdamW skips the projector: here the
        # projector stays in the optimizer but leaves the forward, so its gradient stays None (AdamW skips it).
        student.projectors = torch.nn.ModuleList()
    images = torch.randint(0, 256, (batch, 3, IMAGE_SIDE, IMAGE_SIDE), dtype=torch.uint8, device=dev) if kind != "plain" else None
    x0 = torch.randn(batch, *LATENT, device=dev)
    labels = torch.arange(batch, device=dev) * 37 % NUM_CLASSES
    attn_heads = min(heads, TEACHER_HEADS)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            feats, teacher_logits = teacher_pass(teacher, images) if align else (None, None)
            t, noise = torch.rand(batch, device=dev), torch.randn_like(x0)
            y = torch.where(torch.rand(batch, device=dev) < CFG_PROB, NUM_CLASSES, labels)
            alpha, sigma, _, _ = ref_losses.interpolant("linear", t.view(-1, 1, 1, 1))
            pred, logits, projections = student(alpha * x0 + sigma * noise, t, y)
            total = ref_losses.denoising_loss(pred.float(), x0, noise, t, "linear")
            if align:
                proj = ref_losses.projection_loss([p.float() for p in projections], [feats.float()])
                attn = ref_losses.attention_loss([l if l is None else l.float() for l in logits],
                                                 {k: v.float() for k, v in teacher_logits.items()},
                                                 STUDENT_LAYERS, TEACHER_LAYERS, attn_heads)
                total = total + PROJ_COEFF * proj + ATTN_COEFF * attn
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        opt.step()
    return step


def profile(step, dev, rows):
    """One more step under torch.profiler: its kernels by total device time (what haste's HASTE_CUDA_PROFILE=1
    prints for its own step), the `rows` most expensive."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    cuda = dev.type == "cuda"
    with torch_profile(activities=[ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]) as prof:
        step()
        if cuda:
            torch.cuda.synchronize(dev)
    keys = ["self_device_time_total", "self_cuda_time_total"] if cuda else ["self_cpu_time_total"]
    for key in keys:                                # torch ≥ 2.4 says "device", older ones "cuda"
        try:
            print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70), flush=True)
            return
        except Exception as e:                      # an unknown sort key: the next spelling
            error = e
    print(f"torch.profiler table failed: {error}", flush=True)


def measure(name, model, batch, kind, precision, warmup, reps, dev, profile_rows=0):
    cuda = dev.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    step = make_step(model, batch, kind, precision, dev)
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(dev)
    ms = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            ms.append(start.elapsed_time(end))
        else:                                       # --device cpu: a dry run of the same code, wall clock
            t = time.perf_counter()
            step()
            ms.append((time.perf_counter() - t) * 1e3)
    if profile_rows:
        print(f"{name} {precision}: one step under torch.profiler", flush=True)
        profile(step, dev, profile_rows)
    ms.sort()
    median = ms[len(ms) // 2] if len(ms) % 2 else (ms[len(ms) // 2 - 1] + ms[len(ms) // 2]) / 2
    flops = step_flops(model, batch, kind)
    return {"op": name, "precision": precision,
            "shape": f"x [{batch}, 4, 32, 32]" + (f" + images [{batch}, 3, 256, 256]" if kind != "plain" else ""),
            "ms_median": median, "ms_min": ms[0], "rate": batch / (median * 1e-3), "unit": "img/s", "reps": reps,
            "flop_per_step": flops, "tflop_per_s": flops / (median * 1e-3) / 1e12,
            "peak_memory_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="SiT-B/2,SiT-XL/2")
    p.add_argument("--batches", default="16,64")
    p.add_argument("--precisions", default="fp32,tf32,bf16")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--kinds", default="plain,align,stopped", help="row kinds: plain, align, stopped (comma-separated)")
    p.add_argument("--jsonl", default=None, help="append each row as one JSON line to this file")
    p.add_argument("--list", action="store_true", help="print the row names and exit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run of the same code)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after each row's timed steps, one more under torch.profiler: its N most expensive kernels")
    args = p.parse_args()
    kinds, models = args.kinds.split(","), args.models.split(",")
    for flag, values, allowed in [("--kinds", kinds, KINDS), ("--models", models, MODELS),
                                  ("--precisions", args.precisions.split(","), ["fp32", "tf32", "bf16"])]:
        bad = [v for v in values if v not in allowed]
        if bad:
            p.error(f"{flag}: unknown {', '.join(bad)}; allowed: {', '.join(allowed)}")
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        p.error(f"--batches expects comma-separated positive sizes, got '{args.batches}'")
    plan = [(row_name(m, b, k), m, b, k, prec) for m in models for b in batches for k in kinds
            for prec in args.precisions.split(",")]
    if args.list:
        print("\n".join(sorted({r[0] for r in plan})))
        return
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu_torch.py: torch.cuda.is_available() is False (no GPU or a CPU-only PyTorch)")
    torch.manual_seed(args.seed)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, {where}, median of {args.reps} steps after "
          f"{args.warmup} warm-up", flush=True)
    sink = open(args.jsonl, "a") if args.jsonl else None
    for name, model, batch, kind, precision in plan:
        t0 = time.time()
        try:
            r = measure(name, model, batch, kind, precision, args.warmup, args.reps, dev, args.profile)
        except torch.cuda.OutOfMemoryError:
            r = {"op": name, "precision": precision, "error": "out of memory"}
            torch.cuda.empty_cache()
        except Exception as e:                      # recorded; the next row still runs
            r = {"op": name, "precision": precision, "error": f"{type(e).__name__}: {e}"}
        unit, scale = ("TFLOP/s", 1) if dev.type == "cuda" else ("GFLOP/s", 1e3)
        memory = f"{r['peak_memory_mb']:8.0f} MiB" if r.get("peak_memory_mb") is not None else "       - MiB"
        print(f"{name:<28} {precision:<5} " + (f"{r['ms_median']:9.2f} ms {r['rate']:8.1f} img/s "
              f"{r['tflop_per_s'] * scale:8.2f} {unit} {memory}" if "error" not in r else r["error"])
              + f"  ({time.time() - t0:.0f} s)", flush=True)
        if sink:
            sink.write(json.dumps(r) + "\n")
            sink.flush()


if __name__ == "__main__":
    main()
