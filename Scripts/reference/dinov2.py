"""DINOv2 ViT (non-register) returning final-norm patch tokens and per-block logits, from spec/dinov2.md."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (C // self.heads) ** -0.5, qkv[1], qkv[2]
        logits = q @ k.transpose(-2, -1)
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(out), logits


class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        a, logits = self.attn(self.norm1(x))
        x = x + self.ls1(a)
        return x + self.ls2(self.mlp(self.norm2(x))), logits


class DinoVisionTransformer(nn.Module):
    def __init__(self, patch=14, dim=768, depth=12, heads=12, grid=37, in_chans=3):
        super().__init__()
        self.patch = patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, dim, patch, patch)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        logits = []
        for b in self.blocks:
            x, l = b(x)
            logits.append(l[:, :, 1:, 1:])
        normed = self.norm(x)
        return {"x_norm_clstoken": normed[:, 0], "x_norm_patchtokens": normed[:, 1:], "attn_act": logits}


def resample_pos_embed(pos_embed, new_grid):
    """HASTE's load-time resample: cls kept, grid resized with antialiased bicubic (spec/dinov2.md §3)."""
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    m = int(grid.shape[1] ** 0.5)
    g = grid.reshape(1, m, m, -1).permute(0, 3, 1, 2)
    g = F.interpolate(g, size=(new_grid, new_grid), mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([cls, g.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1)], dim=1)


def preprocess(images_uint8, out_size):
    """uint8 [B,3,R,R] → /255 → ImageNet normalise → plain bicubic resize (spec/dinov2.md §4)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (images_uint8.float() / 255 - mean) / std
    return F.interpolate(x, size=(out_size, out_size), mode="bicubic", align_corners=False)
