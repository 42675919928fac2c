"""safetensors from torch tensors without the `safetensors` package (a GPU node's Python may lack it), streamed:
the header from the tensors' sizes, then each tensor's bytes written in turn, so a large checkpoint (SiT-XL/2's
2.7 GB) is never held twice. (Building the file as one bytes object by concatenation is quadratic: it took the 12-06
H100 run past its 90 s before a single line was printed.) Used by bench_gpu_generate.py and
fixtures/make_bf16_fixture.py."""
import json
import struct

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32"}


def save_file(tensors, path, metadata=None):
    """Writes {name: tensor} (on any device; made contiguous on the CPU) to `path`, with string `metadata` if given."""
    items = [(k, v.detach().cpu().contiguous()) for k, v in tensors.items()]
    header, offset = ({"__metadata__": metadata} if metadata else {}), 0
    for k, v in items:
        n = v.numel() * v.element_size()
        header[k] = {"dtype": DTYPES[v.dtype], "shape": list(v.shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, v in items:
            if v.numel():
                f.write(v.view(torch.uint8).numpy().tobytes())
