"""How sharp is a teacher's attention? Mean entropy (nats) of each block's patch-to-patch attention over Fashion-MNIST
test images, next to ln(patches) for uniform attention. Used for README "Replicating the ordering at small scale".

  python Scripts/analysis/teacher_attention_entropy.py [runs/demo-teacher.safetensors] [--images 512]

Needs torch and safetensors (the fixture venv); the teacher's shape is read from its weights (patch, width, depth,
grid), heads from --heads (configs/demo.yaml: 4). Images: padded to 32×32 grey, replicated to RGB, as haste's loader.
"""
import argparse, gzip, math, sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference.dinov2 import DinoVisionTransformer, preprocess  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("weights", nargs="?", default="runs/demo-teacher.safetensors")
ap.add_argument("--images", type=int, default=512)
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
a = ap.parse_args()

sd = load_file(a.weights)
dim, _, patch, _ = sd["patch_embed.proj.weight"].shape
depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
grid = int(math.isqrt(sd["pos_embed"].shape[1] - 1))
model = DinoVisionTransformer(patch=patch, dim=dim, depth=depth, heads=a.heads, grid=grid)
missing, unexpected = model.load_state_dict(sd, strict=False)
assert not missing, missing
model.eval()

raw = gzip.open(a.data).read()
imgs = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[: a.images]
padded = np.zeros((len(imgs), 32, 32), np.uint8)
padded[:, 2:30, 2:30] = imgs
x = preprocess(torch.from_numpy(padded)[:, None].repeat(1, 3, 1, 1), grid * patch)
with torch.no_grad():
    logits = model(x)["attn_act"]
uniform = math.log(grid * grid)
print(f"teacher {a.weights}: patch {patch}, width {dim}, depth {depth}, grid {grid}x{grid}, {len(imgs)} test images")
print(f"uniform attention over {grid * grid} patches: {uniform:.3f} nats")
for i, l in enumerate(logits):
    p = l.softmax(-1)
    h = -(p * p.clamp_min(1e-30).log()).sum(-1)          # [B, heads, N]
    per_head = h.mean(dim=(0, 2))
    print(f"block {i}: mean entropy {h.mean():.3f} nats ({h.mean() / uniform:.1%} of uniform); per head "
          + " ".join(f"{v:.3f}" for v in per_head.tolist()))
