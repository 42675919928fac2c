#!/usr/bin/env python3
"""PyTorch side of gpu_check.sh stage 6b (issue 12: `haste generate` images/s against the reference generate.py):
SiT-XL/2 with random weights, the reference's Euler-Maruyama SDE sampler (float64 state, CFG with a guidance
interval: REPA/HASTE samplers.py as Scripts/fixtures/samplers.py restates it), then SD-VAE decoding of the batch.

  --write-weights DIR   also save the same random weights for haste: DIR/sit-xl-2.safetensors (`ema.` keys, a
                        reference-style checkpoint) and DIR/sd-vae.safetensors (diffusers keys).
Two forwards are timed, both as generate.py runs them (float32 weights, TF32 on: generate.py's default; no autocast):
`reference` (Scripts/reference/sit.py: explicit attention, projectors every call) and `lean`
(F.scaled_dot_product_attention, no projectors: what haste computes); `--bf16` adds both again under bf16 autocast.
The cost of a step depends only on whether guidance is active (2N rows) or not (N rows), so `--steps S` with the same
interval gives the seconds per step of a 250-step run to within the rounding of the interval's share:
images/s at 250 steps = batch / (250 · seconds per step). Prints one JSON object per measurement.
    python3 Scripts/bench_gpu_generate.py --device cpu --model SiT-tiny --steps 3 --batch 2   # a check without a GPU
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference.sit import SiT  # noqa: E402
from reference.vae import AutoencoderKL  # noqa: E402
from fixtures.models import randomize  # noqa: E402
from fixtures.samplers import euler_maruyama  # noqa: E402
from bench_torch_generate import lean_forward  # noqa: E402
from torch_safetensors import save_file  # noqa: E402

SIZES = {"SiT-XL/2": dict(hidden=1152, depth=28, heads=16), "SiT-B/2": dict(hidden=768, depth=12, heads=12),
         "SiT-tiny": dict(hidden=64, depth=2, heads=2)}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="SiT-XL/2", choices=sorted(SIZES))
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--cfg", type=float, default=1.65)
    p.add_argument("--guidance-high", type=float, default=0.72)
    p.add_argument("--write-weights", default=None)
    p.add_argument("--bf16", action="store_true", help="also time both forwards under bf16 autocast")
    p.add_argument("--skip-vae", action="store_true")
    a = p.parse_args()
    dev = a.device
    torch.backends.cuda.matmul.allow_tf32 = True                  # generate.py's default
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    size = SIZES[a.model]
    sit = SiT(input_size=32, patch=2, in_channels=4, z_dims=(768,), **size).eval().to(dev)
    randomize(sit, 0.02)                                          # random non-zero weights (adaLN-Zero would make v = 0),
                                                                  # drawn on the device (SiT-XL/2 on a VM's CPU: > 90 s)
    vae = None if a.skip_vae else AutoencoderKL().eval()
    if a.write_weights:
        out = Path(a.write_weights)
        out.mkdir(parents=True, exist_ok=True)
        name = a.model.lower().replace("/", "-")
        save_file({f"ema.{k}": v.contiguous().cpu() for k, v in sit.state_dict().items()}, str(out / f"{name}.safetensors"))
        if vae is not None:
            save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(out / "sd-vae.safetensors"))
    sit = sit.to(dev)
    z = torch.randn(a.batch, 4, 32, 32, device=dev)
    y = torch.randint(0, 1000, (a.batch,), device=dev)
    noise = [torch.randn(a.batch, 4, 32, 32, device=dev, dtype=torch.float64) for _ in range(a.steps)]
    forwards = {"reference": lambda x, t, yy: sit(x, t, yy)[0], "lean": lean_forward(sit, size["heads"])}
    precisions = ["fp32+tf32"] + (["bf16 autocast"] if a.bf16 else [])
    with torch.no_grad():
        for precision in precisions:
            for name, fwd in forwards.items():
                ctx = torch.autocast(dev, dtype=torch.bfloat16) if precision == "bf16 autocast" else torch.autocast(dev, enabled=False)
                if dev == "cuda":
                    torch.cuda.reset_peak_memory_stats()               # each row's own peak
                with ctx:
                    wrapped = lambda x, t, yy, f=fwd: f(x, t, yy).float()
                    euler_maruyama(wrapped, z, y, 2, a.cfg, 0.0, a.guidance_high, 1000, "linear", noise)   # warm-up
                    sync(dev)
                    start = time.perf_counter()
                    euler_maruyama(wrapped, z, y, a.steps, a.cfg, 0.0, a.guidance_high, 1000, "linear", noise)
                    sync(dev)
                s = time.perf_counter() - start
                print(json.dumps({"what": f"{a.model} sde {a.steps} steps cfg {a.cfg} interval [0, {a.guidance_high}] "
                                          f"batch {a.batch} (torch {name}, {precision})",
                                  "seconds": s, "seconds_per_step": s / a.steps,
                                  "images_per_s_at_250_steps": a.batch / (250 * s / a.steps),
                                  "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None}),
                      flush=True)
        if vae is not None:
            vae = vae.to(dev)
            lat = torch.randn(a.batch, 4, 32, 32, device=dev)
            vae.decode(lat[:1])                                   # warm-up
            sync(dev)
            start = time.perf_counter()
            vae.decode(lat)
            sync(dev)
            s = time.perf_counter() - start
            print(json.dumps({"what": f"sd-vae decode 256x256 batch {a.batch} (torch, fp32+tf32)", "seconds": s,
                              "images_per_s": a.batch / s}), flush=True)
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}))


if __name__ == "__main__":
    main()
