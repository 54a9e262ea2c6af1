"""NOVA's layers: the fusion function F and the non-invasive self-attention layer.

Liu et al., "Noninvasive Self-attention for Side Information Fusion in Sequential
Recommendation", AAAI 2021, arXiv 2103.03578. ``NOVALayer`` with ``fusion=None`` is the
transformer layer of BERT4Rec's code (``transformer_model`` in ``modeling.py`` of
github.com/FeiSun/BERT4Rec: post-LayerNorm, GELU feed-forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole_attn.explain import capture

FUSION_TYPES = ("add", "concat", "gating")


class Fusion(nn.Module):
    """Fusion function F of NOVA: the id representation and m side embeddings -> one.

    - ``add``: F = h + sum_i s_i.
    - ``concat``: F = W [h; s_1; ...; s_m] + b, back to the hidden size.
    - ``gating``: F = sum_j g_j f_j over f = (h, s_1, ..., s_m), g = softmax_j(f_j . w + b).

    With no side embeddings F is the identity.
    """

    def __init__(self, fusion_type: str, hidden_size: int, n_sides: int):
        super().__init__()
        self.fusion_type = fusion_type
        self.n_sides = n_sides
        if fusion_type == "concat" and n_sides:
            self.proj = nn.Linear((n_sides + 1) * hidden_size, hidden_size)
        elif fusion_type == "gating" and n_sides:
            self.gate = nn.Linear(hidden_size, 1)

    def forward(self, h: torch.Tensor, sides: list[torch.Tensor]) -> torch.Tensor:
        """h [B, L, H], sides m x [B, L, H] -> [B, L, H]."""
        if not sides:
            return h
        if self.fusion_type == "add":
            return h + torch.stack(sides, dim=0).sum(0)
        if self.fusion_type == "concat":
            return self.proj(torch.cat([h, *sides], dim=-1))
        feats = torch.stack([h, *sides], dim=-2)  # [B, L, m+1, H]
        weights = self.gate(feats).softmax(dim=-2)  # [B, L, m+1, 1]
        return (weights * feats).sum(-2)


class NOVALayer(nn.Module):
    """One transformer layer (post-LayerNorm, GELU feed-forward) with NOVA attention.

    Queries and keys are computed from ``fusion(h, sides)``, values from ``h`` alone;
    with ``fusion=None`` it is the standard BERT layer (Q, K, V from ``h``).
    """

    def __init__(
        self,
        hidden_size: int,
        n_heads: int,
        inner_size: int,
        hidden_dropout: float,
        attn_dropout: float,
        layer_norm_eps: float,
        fusion: Fusion | None,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.head_size = hidden_size // n_heads
        self.attn_dropout = attn_dropout
        self.fusion = fusion
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attn_out = nn.Linear(hidden_size, hidden_size)
        self.attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn_in = nn.Linear(hidden_size, inner_size)
        self.ffn_out = nn.Linear(inner_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, l, _ = x.shape
        return x.view(b, l, self.n_heads, self.head_size).transpose(1, 2)  # [B, h, L, d]

    def forward(
        self, h: torch.Tensor, sides: list[torch.Tensor], key_mask: torch.Tensor
    ) -> torch.Tensor:
        """One layer: h [B, L, H], sides m x [B, L, H] -> [B, L, H].

        ``key_mask`` [B, L]: True = real item or mask token (the keys every query may attend).
        """
        qk_in = self.fusion(h, sides) if self.fusion is not None else h
        q = self._heads(self.query(qk_in))
        k = self._heads(self.key(qk_in))
        v = self._heads(self.value(h))  # values from the item-id stream only
        attn = capture.scaled_dot_product_attention(
            self,
            q,
            k,
            v,
            attn_mask=key_mask[:, None, None, :],
            dropout_p=self.attn_dropout if self.training else 0.0,
        )  # [B, h, L, d]
        attn = attn.transpose(1, 2).reshape(h.shape)
        h = self.attn_norm(h + self.dropout(self.attn_out(attn)))
        ffn = self.ffn_out(F.gelu(self.ffn_in(h)))
        return self.ffn_norm(h + self.dropout(ffn))
