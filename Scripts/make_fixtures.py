#!/usr/bin/env python3
"""Makes the PyTorch fixtures under Tests/HasteTests/Fixtures (STYLE R11). Run once by a developer,
never by CI:   /opt/torchvenv/bin/python Scripts/make_fixtures.py [--only NAME ...]

Each module in Scripts/fixtures/ defines FIXTURES = {name: function}; a function returns a dict of tensors
(inputs, weights, outputs, gradients) and optionally a dict of string metadata. Everything is float64 on the
CPU unless a fixture says otherwise, computed by PyTorch itself; noise and indices are inputs, never seeds.
"""
import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

FORMAT_VERSION = "1"   # bump together with Fixture.formatVersion in Tests/HasteTests/Support/Fixtures.swift
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "HasteTests" / "Fixtures"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=None, help="fixture names to (re)make")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fixtures
    table = {}
    for mod in pkgutil.iter_modules(fixtures.__path__):
        m = importlib.import_module(f"fixtures.{mod.name}")
        table.update(getattr(m, "FIXTURES", {}))
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for name, fn in sorted(table.items()):
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        result = fn()
        tensors, meta = result if isinstance(result, tuple) else (result, {})
        meta = {k: str(v) for k, v in meta.items()}
        meta["format_version"] = FORMAT_VERSION
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        save_file(tensors, str(OUT / f"{name}.safetensors"), metadata=meta)
        size = (OUT / f"{name}.safetensors").stat().st_size
        print(f"{name}.safetensors: {len(tensors)} tensors, {size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
