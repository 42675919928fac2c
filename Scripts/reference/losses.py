"""HASTE objective from spec/method.md §2–8 (linear/cosine paths, v target, projection and attention alignment)."""
import math
import torch
import torch.nn.functional as F


def interpolant(path, t):
    if path == "linear":
        return 1 - t, t, -torch.ones_like(t), torch.ones_like(t)
    a = math.pi / 2
    return torch.cos(a * t), torch.sin(a * t), -a * torch.sin(a * t), a * torch.cos(a * t)


def denoising_loss(pred, x0, noise, t, path):
    alpha, sigma, d_alpha, d_sigma = interpolant(path, t.view(-1, 1, 1, 1))
    target = d_alpha * x0 + d_sigma * noise
    return ((pred - target) ** 2).mean(dim=(1, 2, 3)).mean()


def projection_loss(projections, teacher_feats):
    total = 0.0
    for z, y in zip(projections, teacher_feats):
        cos = (F.normalize(z, dim=-1) * F.normalize(y, dim=-1)).sum(-1)
        total = total + (-cos).mean(dim=1).sum()
    return total / (len(projections) * projections[0].shape[0])


def attention_loss(student_logits, teacher_logits, student_layers, teacher_layers, heads):
    total = 0.0
    for s, t in zip(student_layers, teacher_layers):
        S = student_logits[s][:, :heads]
        Tt = teacher_logits[t][:, :heads]
        T = S.shape[-1]
        p = Tt.reshape(-1, T).softmax(-1)
        logq = S.reshape(-1, T).log_softmax(-1)
        total = total + (-(p * logq).sum(-1)).mean()
    return total / len(student_layers)
