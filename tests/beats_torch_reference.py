"""An independent PyTorch re-statement of the public BEATs encoder, used as the parity oracle.

Written for this project from reading microsoft/unilm `beats/BEATs.py` and `beats/backbone.py`
(no code copied). It keeps the public module and parameter names, so `state_dict()` has exactly the
key layout of a released BEATs checkpoint's `model` entry (`patch_embedding.weight`,
`encoder.pos_conv.0.weight_g`, `encoder.layers.N.self_attn.grep_linear.weight`, ...), and it keeps
the public numerics where they differ from textbook attention:

- queries are scaled by `head_dim**-0.5 / 32`, the logits have their row maximum removed and are
  multiplied back by 32 (a float16 overflow guard in the original; mathematically a no-op);
- the bucketed relative position bias lives in layer 0 only and is reused by every layer, each layer
  gating it with its own `grep_linear` / `grep_a` computed from its unscaled query projection;
- post-LN residuals with deep-norm scaling `residual * (2 * layers) ** 0.25` when `deep_norm`;
- a convolutional positional embedding (grouped Conv1d with weight norm over the kernel axis,
  even kernel, last output dropped) added before the encoder LayerNorm.

Only the eval-mode forward pass is restated (dropouts are identities in eval mode); there is no
padding mask, because GRAM never passes one.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class _RelBiasAttention(nn.Module):
    def __init__(self, dim: int, heads: int, num_buckets: int, max_distance: int, has_bias: bool):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        if has_bias:
            self.relative_attention_bias = nn.Embedding(num_buckets, heads)
        self.grep_linear = nn.Linear(self.head_dim, 8)
        self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def bucket(self, rel: torch.Tensor) -> torch.Tensor:
        half = self.num_buckets // 2
        out = (rel > 0).long() * half
        dist = rel.abs()
        exact = half // 2
        far = (
            exact
            + (
                torch.log(dist.float().clamp(min=1) / exact)
                / math.log(self.max_distance / exact)
                * (half - exact)
            ).long()
        )
        far = far.clamp(max=half - 1)
        return out + torch.where(dist < exact, dist, far)

    def position_bias(self, length: int) -> torch.Tensor:
        pos = torch.arange(length)
        buckets = self.bucket(pos[None, :] - pos[:, None])
        return self.relative_attention_bias(buckets).permute(2, 0, 1)  # [H, L, L]

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h, hd = self.heads, self.head_dim
        alpha = 32.0
        raw_q = self.q_proj(x)
        q = (raw_q * hd**-0.5 / alpha).view(b, n, h, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, n, h, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, n, h, hd).transpose(1, 2)
        logits = q @ k.transpose(-1, -2)
        logits = (logits - logits.amax(-1, keepdim=True)) * alpha
        gates = torch.sigmoid(
            self.grep_linear(raw_q.view(b, n, h, hd).transpose(1, 2)).view(b, h, n, 2, 4).sum(-1)
        )
        gate_a, gate_b = gates[..., :1], gates[..., 1:]
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0  # [B, H, N, 1]
        logits = logits + gate * pos_bias[None]
        out = F.softmax(logits, dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class _Layer(nn.Module):
    def __init__(self, cfg: dict, has_bias: bool):
        super().__init__()
        dim = cfg["encoder_embed_dim"]
        self.self_attn = _RelBiasAttention(
            dim, cfg["encoder_attention_heads"], cfg["num_buckets"], cfg["max_distance"], has_bias
        )
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg["encoder_ffn_embed_dim"])
        self.fc2 = nn.Linear(cfg["encoder_ffn_embed_dim"], dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.alpha = (2 * cfg["encoder_layers"]) ** 0.25 if cfg["deep_norm"] else 1.0

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, pos_bias))
        return self.final_layer_norm(x * self.alpha + self.fc2(F.gelu(self.fc1(x))))


class _SamePad(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :-1]


class _Encoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        dim = cfg["encoder_embed_dim"]
        conv = nn.Conv1d(
            dim,
            dim,
            kernel_size=cfg["conv_pos"],
            padding=cfg["conv_pos"] // 2,
            groups=cfg["conv_pos_groups"],
        )
        conv = torch.nn.utils.weight_norm(conv, name="weight", dim=2)
        self.pos_conv = nn.Sequential(conv, _SamePad(), nn.GELU())
        self.layers = nn.ModuleList(
            [_Layer(cfg, has_bias=True) for _ in range(cfg["encoder_layers"])]
        )
        # As in the public code: every layer holds the same Embedding object, so the state dict
        # lists it once per layer, and only layer 0's copy is ever read.
        shared = self.layers[0].self_attn.relative_attention_bias
        for layer in self.layers[1:]:
            layer.self_attn.relative_attention_bias = shared
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.layer_norm(x)
        pos_bias = self.layers[0].self_attn.position_bias(x.shape[1])
        for layer in self.layers:
            x = layer(x, pos_bias)
        return x


class BEATsReference(nn.Module):
    """Eval-mode BEATs encoder: fbank [B, T, M] (already normalised) -> tokens [B, N, D]."""

    def __init__(self, cfg: dict):
        super().__init__()
        patch = cfg["input_patch_size"]
        self.patch_embedding = nn.Conv2d(
            1, cfg["embed_dim"], kernel_size=patch, stride=patch, bias=cfg["conv_bias"]
        )
        self.layer_norm = nn.LayerNorm(cfg["embed_dim"])
        self.post_extract_proj = nn.Linear(cfg["embed_dim"], cfg["encoder_embed_dim"])
        self.encoder = _Encoder(cfg)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(fbank.unsqueeze(1))  # [B, C, T/p, M/p]
        x = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)
        x = self.post_extract_proj(self.layer_norm(x))
        return self.encoder(x)


def beats_cfg(**overrides) -> dict:
    """The cfg dict of BEATs_iter3_plus_AS2M (as stored in the checkpoint's `cfg` entry)."""
    cfg = dict(
        input_patch_size=16,
        embed_dim=512,
        conv_bias=False,
        encoder_layers=12,
        encoder_embed_dim=768,
        encoder_ffn_embed_dim=3072,
        encoder_attention_heads=12,
        layer_norm_first=False,
        deep_norm=True,
        conv_pos=128,
        conv_pos_groups=16,
        relative_position_embedding=True,
        num_buckets=320,
        max_distance=800,
        gru_rel_pos=True,
    )
    cfg.update(overrides)
    return cfg
