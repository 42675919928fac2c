"""SD3-style joint-attention MMDiT with HASTE taps, written from spec/mmdit.md §1–5 (keys, order and PyTorch
default init exactly as the reference models/mmdit.py is described there). Shared pieces from reference.sit."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .sit import Mlp, TimestepEmbedder, modulate, sincos_2d   # Mlp: fc1, tanh-GELU, fc2 as in SiT


class Attn(nn.Module):
    def __init__(self, dim, pre_only):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        if not pre_only:
            self.proj = nn.Linear(dim, dim)


class DismantledBlock(nn.Module):
    """One stream: norm1, attn (qkv[, proj]), norm2, mlp, adaLN_modulation (spec §3, §5 order)."""

    def __init__(self, dim, heads, mlp_ratio=4.0, pre_only=False):
        super().__init__()
        self.heads, self.pre_only = heads, pre_only
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attn(dim, pre_only)
        if not pre_only:
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, (2 if pre_only else 6) * dim))

    def pre_attention(self, x, c):
        B, L, D = x.shape
        mod = self.adaLN_modulation(c).chunk(2 if self.pre_only else 6, dim=-1)
        qkv = self.attn.qkv(modulate(self.norm1(x), mod[0], mod[1]))
        q, k, v = qkv.reshape(B, L, 3, self.heads, D // self.heads).movedim(2, 0)   # each [B, L, H, Dh]
        return q, k, v, mod

    def post_attention(self, x, attn, mod):
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        x = x + gate_msa.unsqueeze(1) * self.attn.proj(attn)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class JointBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0, pre_only=False):
        super().__init__()
        self.context_block = DismantledBlock(dim, heads, mlp_ratio, pre_only=pre_only)
        self.x_block = DismantledBlock(dim, heads, mlp_ratio)

    def forward(self, ctx, x, c):
        B, L, D = ctx.shape
        H = self.x_block.heads
        qc, kc, vc, mc = self.context_block.pre_attention(ctx, c)
        qx, kx, vx, mx = self.x_block.pre_attention(x, c)
        q, k, v = (torch.cat([a, b], dim=1).transpose(1, 2) for a, b in ((qc, qx), (kc, kx), (vc, vx)))   # [B, H, L+T, Dh]
        scale = (D // H) ** -0.5
        joint = ((q @ k.transpose(-2, -1)) * scale).softmax(-1) @ v
        joint = joint.transpose(1, 2).reshape(B, -1, D)
        # HASTE tap: the image stream's own q, k only (spec §3 last paragraph)
        logits = (qx.transpose(1, 2) @ kx.transpose(1, 2).transpose(-2, -1)) * scale
        x = self.x_block.post_attention(x, joint[:, L:], mx)
        ctx = None if self.context_block.pre_only else self.context_block.post_attention(ctx, joint[:, :L], mc)
        return ctx, x, logits


class FinalLayer(nn.Module):
    def __init__(self, hidden, patch, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class MMDiT(nn.Module):
    """Defaults = the reference MMDiT(input_size=32, z_dims=[768], encoder_depth=8): depth 24, hidden 32·depth,
    heads = depth, pos_embed_max_size 16, context in-features 768."""

    def __init__(self, input_size=32, patch=2, in_channels=4, depth=24, hidden=None, heads=None, mlp_ratio=4.0,
                 context_dim=768, pos_embed_max_size=16, encoder_depth=8, z_dims=(768,), projector_dim=2048):
        super().__init__()
        hidden = hidden or 32 * depth
        heads = heads or depth
        self.patch, self.in_channels, self.encoder_depth = patch, in_channels, encoder_depth
        self.max_size = pos_embed_max_size
        self.register_buffer("pos_embed", torch.from_numpy(sincos_2d(hidden, pos_embed_max_size)).unsqueeze(0))
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv2d(in_channels, hidden, patch, patch)
        self.t_embedder = TimestepEmbedder(hidden)
        self.context_embedder = nn.Linear(context_dim, hidden)
        self.joint_blocks = nn.ModuleList([JointBlock(hidden, heads, mlp_ratio, pre_only=(i == depth - 1))
                                           for i in range(depth)])
        self.final_layer = FinalLayer(hidden, patch, in_channels)
        self.projectors = nn.ModuleList([nn.Sequential(nn.Linear(hidden, projector_dim), nn.SiLU(),
                                                       nn.Linear(projector_dim, projector_dim), nn.SiLU(),
                                                       nn.Linear(projector_dim, z)) for z in z_dims])

    def cropped_pos_embed(self, g):
        m, D = self.max_size, self.pos_embed.shape[-1]
        top = (m - g) // 2
        return self.pos_embed.reshape(1, m, m, D)[:, top:top + g, top:top + g].reshape(1, g * g, D)

    def unpatchify(self, x):
        c, p = self.in_channels, self.patch
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x, t, context):
        g = x.shape[-1] // self.patch
        x = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.cropped_pos_embed(g)
        c = self.t_embedder(t)
        ctx = self.context_embedder(context)
        logits, projections = [], []
        for i, block in enumerate(self.joint_blocks):
            ctx, x, l = block(ctx, x, c)
            if i < self.encoder_depth:
                logits.append(l)
            if i == self.encoder_depth - 1:
                projections = [p(x) for p in self.projectors]
        return self.unpatchify(self.final_layer(x, c)), logits, projections
