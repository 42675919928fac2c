"""Tensors PyTorch makes in one bf16-autocast training step of a `haste bench train --device cuda` row, and how many
ops make them: the torch side of the host-only device's "tensors made per step" and "kernel launches per step"
(`HASTE_CUDA_HOST_ONLY=1 haste bench train --device cuda --models SiT-XL/2 --batches 64 --only "SiT-XL/2 bs64"`).

  /work/venv/bin/python Scripts/analysis/torch_step_bytes.py --model SiT-XL/2 --kind plain [--batches 2,4] [--at 64,256]

Runs Scripts/bench_gpu_torch.py's step (zero-grad, forward under bf16 autocast with F.scaled_dot_product_attention,
backward, clip, AdamW with foreach as on CUDA) on the CPU under a TorchDispatchMode that counts every aten op's outputs that are new storage
(views and in-place results are not), and skips the arithmetic of the products (mm, addmm, bmm, attention,
convolution: their outputs are made empty, with the shapes and dtypes meta tensors give), so a step of SiT-XL/2 takes
seconds. One warm-up step (AdamW's state), then one counted step at each of two small batches; the counts are affine
in the batch (activations grow with it, parameters, gradients and casts of weights do not), so the two give the
figures at --at. CPU autocast differs from CUDA's in its op lists only where SiT has no op (both run linear, matmul
and attention in bf16, layer_norm and the losses in float32). An aten op is not always one CUDA kernel (a fused
foreach op is one launch per ~tensor list chunk, a layer_norm backward two): the op count is a proxy.
"""
import argparse
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_gpu_torch as bench  # noqa: E402

GEMMS = {"mm", "bmm", "addmm", "baddbmm"}                      # by name; the others by a part of it
PRODUCT_PARTS = ("convolution", "scaled_dot_product", "_efficient_attention", "_flash_attention")


def is_product(func):
    name = func.__name__.split(".")[0]
    return name in GEMMS or any(p in name for p in PRODUCT_PARTS)


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.bytes, self.ops, self.by_op = 0, 0, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if is_product(func):
            meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t   # noqa: E731
            out_meta = func(*tree_map(meta, args), **tree_map(meta, kwargs))
            out = tree_map(lambda m: torch.empty_strided(m.shape, m.stride(), dtype=m.dtype)
                           if isinstance(m, torch.Tensor) else m, out_meta)
        else:
            out = func(*args, **kwargs)
        seen = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        made = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor) and o.device.type != "meta"
                and o.untyped_storage().data_ptr() not in seen and o.untyped_storage().nbytes() > 0]
        if made:
            self.ops += 1
            n = sum(o.untyped_storage().nbytes() for o in made)
            self.bytes += n
            name = func.__name__.split(".")[0]
            calls, total = self.by_op.get(name, (0, 0))
            self.by_op[name] = (calls + 1, total + n)
        return out


def count(model, kind, batch, teacher_only=False, by_op=0):
    torch.manual_seed(0)
    if teacher_only:                         # the DINOv2-B teacher's pass alone (no gradient), under bf16 autocast
        teacher, images = bench.make_teacher(False), torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16)

        def step():
            with autocast:
                bench.teacher_pass(teacher, images)
    else:
        step = bench.make_step(model, batch, kind, "bf16", torch.device("cpu"))
    step()                                   # AdamW's state, autocast's first casts
    c = Count()
    with c:
        step()
    for name, (calls, total) in sorted(c.by_op.items(), key=lambda kv: -kv[1][1])[:by_op]:
        print(f"  bs{batch} {name:40s} {calls:5d} ops {total / 1e9:8.3f} GB")
    return c.bytes, c.ops


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="SiT-XL/2")
    p.add_argument("--kind", default="plain", choices=list(bench.KINDS))
    p.add_argument("--batches", default="2,4")
    p.add_argument("--at", default="64,256")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--teacher-only", action="store_true", help="count the teacher's pass alone")
    p.add_argument("--by-op", type=int, default=0, help="also print the N aten ops making the most bytes (larger batch)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    adamw = torch.optim.AdamW
    # CUDA's default AdamW is the foreach implementation (one op per tensor list); the CPU's would loop per tensor.
    torch.optim.AdamW = lambda *args, **kw: adamw(*args, **{**kw, "foreach": True})
    b1, b2 = (int(x) for x in a.batches.split(","))
    (y1, o1) = count(a.model, a.kind, b1, a.teacher_only)
    (y2, o2) = count(a.model, a.kind, b2, a.teacher_only, by_op=a.by_op)
    slope, ops_slope = (y2 - y1) / (b2 - b1), (o2 - o1) / (b2 - b1)
    row = "DINOv2-B teacher pass bs{}".format(b1) if a.teacher_only else bench.row_name(a.model, b1, a.kind)
    print(f"{row} and bs{b2}: {y1 / 1e9:.3f} / {y2 / 1e9:.3f} GB of new tensors, {o1} / {o2} ops making them")
    for b in (int(x) for x in a.at.split(",")):
        name = f"DINOv2-B teacher pass bs{b}" if a.teacher_only else bench.row_name(a.model, b, a.kind)
        print(f"{name}: {(y1 + slope * (b - b1)) / 1e9:.1f} GB of tensors made per step, "
              f"{o1 + ops_slope * (b - b1):.0f} ops (affine in the batch from bs{b1} and bs{b2})")


if __name__ == "__main__":
    main()
