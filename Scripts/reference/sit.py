"""SiT with HASTE taps, from spec/sit.md (keys and init exactly as the reference models/sit.py)."""
import math
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden, freq=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(freq, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.freq = freq

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half).to(t.device)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return emb.to(t.dtype)

    def forward(self, t):
        return self.mlp(self.timestep_embedding(t, self.freq))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, hidden):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, y):
        return self.embedding_table(y)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * (C // self.heads) ** -0.5
        logits = q @ k.transpose(-2, -1)
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(out), logits


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiTBlock(nn.Module):
    def __init__(self, hidden, heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, c):
        sm, cm, gm, sp, cp, gp = self.adaLN_modulation(c).chunk(6, dim=-1)
        a, logits = self.attn(modulate(self.norm1(x), sm, cm))
        x = x + gm.unsqueeze(1) * a
        x = x + gp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sp, cp))
        return x, logits


class FinalLayer(nn.Module):
    def __init__(self, hidden, patch, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def sincos_2d(dim, grid):
    q = dim // 4
    omega = 1.0 / 10000 ** (np.arange(q, dtype=np.float64) / q)
    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    def enc(pos):
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    return np.concatenate([enc(cols), enc(rows)], axis=1).astype(np.float32)


class SiT(nn.Module):
    def __init__(self, input_size=32, patch=2, in_channels=4, hidden=1152, depth=28, heads=16, mlp_ratio=4.0,
                 num_classes=1000, encoder_depth=8, z_dims=(768,), projector_dim=2048):
        super().__init__()
        self.patch, self.in_channels, self.encoder_depth = patch, in_channels, encoder_depth
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv2d(in_channels, hidden, patch, patch)
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(num_classes, hidden)
        T = (input_size // patch) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, T, hidden), requires_grad=False)
        self.blocks = nn.ModuleList([SiTBlock(hidden, heads, mlp_ratio) for _ in range(depth)])
        self.projectors = nn.ModuleList([nn.Sequential(nn.Linear(hidden, projector_dim), nn.SiLU(),
                                                       nn.Linear(projector_dim, projector_dim), nn.SiLU(),
                                                       nn.Linear(projector_dim, z)) for z in z_dims])
        self.final_layer = FinalLayer(hidden, patch, in_channels)
        self.pos_embed.data.copy_(torch.from_numpy(sincos_2d(hidden, input_size // patch)).unsqueeze(0))

    def unpatchify(self, x):
        c, p = self.in_channels, self.patch
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x, t, y):
        x = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        logits, projections = [], []
        for i, block in enumerate(self.blocks):
            x, l = block(x, c)
            if i < self.encoder_depth:
                logits.append(l)
            if i == self.encoder_depth - 1:
                projections = [p(x) for p in self.projectors]
        return self.unpatchify(self.final_layer(x, c)), logits, projections
