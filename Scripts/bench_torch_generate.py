#!/usr/bin/env python3
"""PyTorch side of Scripts/bench_generate.sh: SiT-B/2 Euler-ODE sampling with CFG (batch 16, guidance on every
step) and SD-VAE decoding at 256x256, float32 on the CPU, random weights (timing only).

  --write-weights DIR   also save the same random weights for haste: DIR/sit-b-2.safetensors (`ema.` keys, a
                        reference-style checkpoint without config) and DIR/sd-vae.safetensors (diffusers keys).
Prints one JSON object per measurement. Two SiT forwards are timed: `reference` (Scripts/reference/sit.py as the
reference runs it: explicit attention, projectors computed every call) and `lean` (F.scaled_dot_product_attention,
no projectors: what haste computes).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference.sit import SiT, modulate  # noqa: E402
from reference.vae import AutoencoderKL  # noqa: E402
from fixtures.models import randomize  # noqa: E402
from fixtures.samplers import euler  # noqa: E402


def lean_forward(m, heads):
    def forward(x, t, y):
        x = m.x_embedder.proj(x).flatten(2).transpose(1, 2) + m.pos_embed
        c = m.t_embedder(t) + m.y_embedder(y)
        for blk in m.blocks:
            sm, cm, gm, sp, cp, gp = blk.adaLN_modulation(c).chunk(6, dim=-1)
            h = modulate(blk.norm1(x), sm, cm)
            b, n, d = h.shape
            q, k, v = blk.attn.qkv(h).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
            x = x + gm.unsqueeze(1) * blk.attn.proj(a)
            x = x + gp.unsqueeze(1) * blk.mlp(modulate(blk.norm2(x), sp, cp))
        return m.unpatchify(m.final_layer(x, c))
    return forward


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--vae-batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write-weights", default=None)
    p.add_argument("--skip", nargs="*", default=[], help="any of: reference lean vae")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sit = SiT(input_size=32, patch=2, in_channels=4, hidden=768, depth=12, heads=12, z_dims=(768,)).eval()
    randomize(sit, 0.02)                       # random non-zero weights (adaLN-Zero would make v = 0)
    vae = AutoencoderKL().eval()
    if a.write_weights:
        out = Path(a.write_weights)
        out.mkdir(parents=True, exist_ok=True)
        save_file({f"ema.{k}": v.contiguous() for k, v in sit.state_dict().items()}, str(out / "sit-b-2.safetensors"))
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(out / "sd-vae.safetensors"))
    z = torch.randn(a.batch, 4, 32, 32)
    y = torch.randint(0, 1000, (a.batch,))
    forwards = {"reference": lambda x, t, yy: sit(x, t, yy)[0], "lean": lean_forward(sit, 12)}
    with torch.no_grad():
        for name, fwd in forwards.items():
            if name in a.skip:
                continue
            fwd(z[:2], torch.full((2,), 0.5), y[:2])                    # warm-up
            start = time.perf_counter()
            euler(fwd, z, y, a.steps, False, a.cfg, 0.0, 1.0, 1000)
            s = time.perf_counter() - start
            print(json.dumps({"what": f"sit-b-2 ode {a.steps} steps cfg {a.cfg} batch {a.batch} (torch {name})",
                              "seconds": s, "images_per_s": a.batch / s, "seconds_per_step": s / a.steps}), flush=True)
        if "vae" not in a.skip:
            lat = torch.randn(a.vae_batch, 4, 32, 32)
            vae.decode(lat[:1])                                           # warm-up
            start = time.perf_counter()
            vae.decode(lat)
            s = time.perf_counter() - start
            print(json.dumps({"what": f"sd-vae decode 256x256 batch {a.vae_batch} (torch)", "seconds": s,
                              "images_per_s": a.vae_batch / s}), flush=True)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
