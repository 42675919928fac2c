#!/usr/bin/env python3
"""PyTorch timings of the rows of `haste bench train` (Sources/haste/Commands/BenchTrainRows.swift): one full
HASTE training step (zero-grad, teacher pass, draws, forward, loss, backward, clip 1.0, AdamW) with the models
and losses of Scripts/reference, float32 on the CPU; same names, batch sizes, warm-up and repetitions.

    /opt/torchvenv/bin/python Scripts/bench_torch_train.py [--threads N (all cores)] [--reps 3] [--warmup 1] [--json]
        [--only ROW | --list] [--explicit-attention]
        [--sweep [--sweep-models M,…] [--sweep-batches B,…]]

--sweep: the rows of `haste bench train --sweep` (Sources/haste/Commands/BenchTrainSweep.swift): SiT-S/B/L/XL/2 over
batch 1, 4, 16, 64, the denoising step only, one process per row (this script with --sweep --only ROW --json), with
the same analytic FLOP count (SiTConfig.trainingFLOPs), the same share of the measured FMA peak (here of a torch.mm
of the same sizes) and the same rule for skipping rows that would not fit (CostSweep.peakModel / skipReason).

Blocks whose logits are not aligned use F.scaled_dot_product_attention, as haste's do; --explicit-attention runs
the reference modules verbatim (explicit softmax(q·kᵀ)·v in every block, logits kept). The peak RSS printed is the
whole process's: `Scripts/bench_compare.sh train` runs one row per process.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from bench_torch import measure, table, use_sdpa          # Scripts/ is this script's folder, hence on sys.path
from reference import dinov2 as ref_dinov2, losses as ref_losses, sit as ref_sit

# hidden, depth, heads, patch; SiT-tiny/4 is the demo's student (configs/demo.yaml), for quick checks of the sweep
MODELS = {"SiT-S/2": (384, 12, 6, 2), "SiT-B/2": (768, 12, 12, 2), "SiT-L/2": (1024, 24, 16, 2), "SiT-XL/2": (1152, 28, 16, 2),
          "SiT-tiny/4": (128, 6, 4, 4)}
ENCODER_DEPTH = {"SiT-tiny/4": 4}                            # 8 for the others
TRAIN_MODELS, BATCHES = ["SiT-S/2", "SiT-B/2"], [4, 16]
SWEEP_MODELS, SWEEP_BATCHES, MEMORY_SHARE = ["SiT-S/2", "SiT-B/2", "SiT-L/2", "SiT-XL/2"], [1, 4, 16, 64], 0.8
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
        hidden, depth, heads, patch = MODELS[model_name]
        student = ref_sit.SiT(input_size=32, patch=patch, in_channels=4, hidden=hidden, depth=depth, heads=heads,
                              num_classes=NUM_CLASSES, encoder_depth=ENCODER_DEPTH.get(model_name, 8),
                              z_dims=(TEACHER_DIM,) if align else (), projector_dim=2048)
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
    for model in TRAIN_MODELS:
        for batch in BATCHES:
            for align in (False, True):
                shape = f"x [{batch}, 4, 32, 32]" + (f" + images [{batch}, 3, 256, 256]" if align else "")
                out.append((row_name(model, batch, align), shape, ("images", batch), train_step(model, batch, align, explicit)))
    out.append((TEACHER_ROW, f"images [{TEACHER_BATCH}, 3, 256, 256] → 224, logits of 8…11", ("images", TEACHER_BATCH),
                teacher_forward(explicit)))
    return out


# --- the sweep: how cost grows (issue #15 item 4) ---

def forward_macs(model, batch, in_channels=4, input_size=32, mlp_ratio=4.0):
    """SiTConfig.forwardMACs (Sources/HasteModels/SiT/SiTConfig+FLOPs.swift), without projectors: every linear, conv and
    attention matmul of one forward pass. Per sample, with D hidden, T tokens, M = D·mlp_ratio, P = C·patch²: patch
    embedding T·P·D, timestep MLP 256·D + D², per block adaLN 6·D², qkv 3·T·D², q·kᵀ and softmax·v 2·T²·D, out
    projection T·D², MLP 2·T·D·M; final layer adaLN 2·D² and linear T·D·P."""
    d, depth, _, patch = MODELS[model]
    t, m, p = (input_size // patch) ** 2, int(d * mlp_ratio), in_channels * patch * patch
    embed = t * p * d + 256 * d + d * d
    block = 6 * d * d + 3 * t * d * d + 2 * t * t * d + t * d * d + 2 * t * d * m
    final = 2 * d * d + t * d * p
    return batch * (embed + depth * block + final)


def training_flops(model, batch):
    """SiTConfig.trainingFLOPs: forward + backward = 3 × the forward's MACs × 2."""
    return 3 * 2 * forward_macs(model, batch)


def parameter_count(model, in_channels=4, input_size=32):
    """Parameters of the reference SiT without projectors (pos_embed included, as haste's state dict has it)."""
    d, depth, _, patch = MODELS[model]
    t, m, out = (input_size // patch) ** 2, 4 * d, patch * patch * in_channels
    embed = d * in_channels * patch * patch + d + 256 * d + d + d * d + d + (NUM_CLASSES + 1) * d + t * d
    block = 3 * d * d + 3 * d + d * d + d + d * m + m + m * d + d + 6 * d * d + 6 * d
    final = d * out + out + 2 * d * d + 2 * d
    return embed + depth * block + final


def fixed_mib(model):
    """CostSweep.fixedMiB: weights, gradients and AdamW's two moments, 16 bytes per parameter."""
    return parameter_count(model) * 16 / 2 ** 20


def peak_model(measured, fixed):
    """CostSweep.peakModel: (fixed MiB, MiB per image) from [(batch, peak MiB)] of smaller batches: none measured ->
    `fixed` alone; one -> `fixed` (at most its peak) and the rest of its peak per image; more -> the line through
    the two largest batches (per-image part at least 0)."""
    points = sorted(measured)
    if not points:
        return fixed, 0.0
    last_batch, last_peak = points[-1]
    smaller = [pt for pt in points if pt[0] < last_batch]
    if not smaller:
        f = min(fixed, last_peak)
        return f, (last_peak - f) / last_batch
    prev_batch, prev_peak = smaller[-1]
    per = max(0.0, (last_peak - prev_peak) / (last_batch - prev_batch))
    return last_peak - per * last_batch, per


def skip_reason(batch, model, mem_available):
    """CostSweep.skipReason: the reason to skip a row predicted above MEMORY_SHARE of MemAvailable, else None."""
    fixed, per = model
    predicted = fixed + per * batch
    if predicted <= MEMORY_SHARE * mem_available:
        return None
    return (f"predicted peak {predicted:.0f} MiB ({fixed:.0f} fixed + {per:.1f} per image) > "
            f"{100 * MEMORY_SHARE:.0f}% of MemAvailable {mem_available:.0f} MiB")


def mem_available_mib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def fma_peak(threads, seconds=0.2, max_size=4096):
    """CPUPeak.measure with torch.mm: n doubles from 512 until one call takes a quarter of `seconds` (or n reaches
    max_size), then calls for `seconds` (at least 2); the best call's GFLOP/s and n."""
    torch.set_num_threads(threads)
    n = 512
    while True:
        a, b = torch.rand(n, n), torch.rand(n, n)
        c = torch.empty(n, n)

        def call():
            start = time.perf_counter()
            torch.mm(a, b, out=c)
            return time.perf_counter() - start
        call()
        times = [call()]
        if times[0] >= seconds / 4 or n * 2 > max_size:
            while len(times) < 2 or sum(times) < seconds:
                times.append(call())
            return 2 * n ** 3 / min(times) / 1e9, n
        n *= 2


def sweep_names(models, batches):
    return [row_name(m, b, False) for m in models for b in sorted(set(batches))]


def sweep_case(name, models, batches, explicit):
    for m in models:
        for b in sorted(set(batches)):
            if row_name(m, b, False) == name:
                return name, f"x [{b}, 4, 32, 32]", ("images", b), train_step(m, b, False, explicit)
    return None


def run_sweep(args, models, batches):
    """The sweep in this process's children, as `haste bench train --sweep` runs it; prints a table or --json."""
    peak, size = fma_peak(args.threads)
    available = args.sweep_mem_available or mem_available_mib()
    rows = []
    if not args.json:
        print(f"torch {torch.__version__} sweep: {args.threads} threads, median of {args.reps} steps after {args.warmup} "
              f"warm-up, one process per row; float32 FMA peak measured {peak:.0f} GFLOP/s (torch.mm {size}^3)")
        print("row                   step ms      img/s  GFLOP/step  GFLOP/s  % FMA peak  RSS MiB")
    for model in models:
        fixed, measured, stop = fixed_mib(model), [], None
        for batch in sorted(set(batches)):
            name = row_name(model, batch, False)
            row = {"op": name, "model": model, "batch": batch, "gflop_per_step": training_flops(model, batch) / 1e9}
            why = stop or (available and skip_reason(batch, peak_model(measured, fixed), available))
            if why:
                row["skipped"] = why
            else:
                cmd = [sys.executable, os.path.abspath(__file__), "--sweep", "--only", name, "--json", "--sweep-models", model,
                       "--sweep-batches", str(batch), "--threads", str(args.threads), "--reps", str(args.reps),
                       "--warmup", str(args.warmup), "--seed", str(args.seed)] + (["--explicit-attention"] if args.explicit_attention else [])
                done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
                if done.returncode != 0:
                    row["skipped"] = f"failed: exit status {done.returncode}"
                    stop = f"not run: batch {batch} failed"
                else:
                    report = json.loads(done.stdout)
                    r = report["rows"][0]
                    gflops = row["gflop_per_step"] / (r["ms_median"] * 1e-3)
                    row.update(ms_median=r["ms_median"], ms_min=r["ms_min"], img_per_s=r["rate"], reps=r["reps"],
                               gflops=gflops, fma_peak_pct=100 * gflops / peak, peak_rss_mb=report["peak_rss_mb"])
                    measured.append((batch, report["peak_rss_mb"]))
            rows.append(row)
            if not args.json:
                if "skipped" in row:
                    print(f"{name:<20}  skipped: {row['skipped']}")
                else:
                    print(f"{name:<20}  {row['ms_median']:8.1f}  {row['img_per_s']:9.2f}  {row['gflop_per_step']:10.3f}  "
                          f"{row['gflops']:7.1f}  {row['fma_peak_pct']:10.1f}  {row['peak_rss_mb']:7.0f}")
    if args.json:
        print(json.dumps({"threads": args.threads, "device": "cpu", "torch": torch.__version__, "fma_peak_gflops": peak,
                          "mem_available_mb": available, "rows": rows}, indent=2))


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
    p.add_argument("--sweep", action="store_true", help="SiT sizes x batch sizes, denoising step only (see the docstring)")
    p.add_argument("--sweep-models", default=",".join(SWEEP_MODELS))
    p.add_argument("--sweep-batches", default=",".join(map(str, SWEEP_BATCHES)))
    p.add_argument("--sweep-mem-available", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.sweep:
        models = args.sweep_models.split(",")
        try:
            batches = [int(b) for b in args.sweep_batches.split(",")]
        except ValueError:
            batches = []
        if any(m not in MODELS for m in models) or not batches or min(batches) < 1:
            sys.exit(f"--sweep-models {args.sweep_models} / --sweep-batches {args.sweep_batches}: models are "
                     f"{', '.join(MODELS)}; batches positive integers, comma-separated")
        names = sweep_names(models, batches)
        if args.list:
            print("\n".join(names))
            return
        if args.only is None:
            return run_sweep(args, models, batches)
        if args.only not in names:
            sys.exit(f"--only '{args.only}' is not a --sweep row; rows are: {', '.join(names)}")
        all_rows = [sweep_case(args.only, models, batches, args.explicit_attention)]
    else:
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
