"""Bytes PyTorch's autograd graph holds for backward in one step of a `haste bench train` row, per op type: the
torch side of `haste bench train --only ROW --saved-bytes` (Sources/HasteTensor/Autograd/SavedBytes.swift).

  /work/venv/bin/python Scripts/analysis/saved_bytes_torch.py --only "SiT-B/2 bs4" [--threads N]

Runs Scripts/bench_torch_train.py's step of that row up to `total.backward()`, then walks the graph from the loss in
forward order (post-order DFS, as haste's walk) and reads each node's saved tensors (its `_saved_*` attributes, what
torch.autograd.graph.saved_tensors_hooks would see packed). Each storage counts once, under the first node holding
it; storages of parameters are left out, as haste leaves out its parameter arena.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_torch_train as bench  # noqa: E402


def saved_tensors(fn):
    for name in dir(fn):
        if not name.startswith("_saved_"):
            continue
        try:
            value = getattr(fn, name)
        except RuntimeError:                  # freed, or an undefined optional tensor
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, torch.Tensor):
                yield v


def report(loss, params):
    skip = {p.untyped_storage().data_ptr() for p in params}
    order, seen, stack = [], set(), [(loss.grad_fn, False)]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.append((fn, True))
        stack.extend((nxt, False) for nxt, _ in reversed(fn.next_functions) if nxt is not None and nxt not in seen)
    rows, owned = {}, set()
    for fn in order:
        op = type(fn).__name__
        r = rows.setdefault(op, [0, 0])
        r[0] += 1
        for t in saved_tensors(fn):
            s = t.untyped_storage()
            if s.data_ptr() in skip or s.data_ptr() in owned:
                continue
            owned.add(s.data_ptr())
            r[1] += s.nbytes()
    print("op                                          nodes  saved MiB")
    for op, (n, b) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        print(f"{op[:42]:42s} {n:6d} {b / 2**20:10.1f}")
    print(f"{'total':49s} {sum(b for _, b in rows.values()) / 2**20:10.1f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", required=True, help='a training row of Scripts/bench_torch_train.py, e.g. "SiT-B/2 bs4"')
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    makers = {name: make for name, _, _, make in bench.rows(explicit=False)}
    if a.only not in makers or a.only == bench.TEACHER_ROW:
        sys.exit(f"--only: '{a.only}' is not a training row; rows are: "
                 + ", ".join(n for n in makers if n != bench.TEACHER_ROW))
    torch.manual_seed(0)
    step = makers[a.only]()

    class Reported(Exception):
        pass

    # Parameters: every leaf reachable from the loss (AccumulateGrad nodes hold them).
    def leaves(loss):
        out, stack, seen = [], [loss.grad_fn], set()
        while stack:
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            if hasattr(fn, "variable"):
                out.append(fn.variable)
            stack.extend(n for n, _ in fn.next_functions)
        return out

    original = torch.Tensor.backward

    def patched(loss, *args, **kwargs):
        print(f"{a.only}: bytes saved for backward (torch {torch.__version__}; parameters excluded)")
        report(loss, leaves(loss))
        raise Reported
    torch.Tensor.backward = patched
    try:
        step()
    except Reported:
        pass
    finally:
        torch.Tensor.backward = original


if __name__ == "__main__":
    main()
