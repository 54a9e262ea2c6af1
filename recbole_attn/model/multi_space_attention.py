"""ATRank's attention block: attention over K latent semantic spaces, then a feed-forward layer.

Follows ``multihead_attention`` and ``feedforward`` of the reference code
(github.com/jinze1994/ATRank, atrank/model.py); used both for the self-attention over the
behaviours and, with the target as the one query, for the "vanilla attention".
RecBole's ``MultiHeadAttention`` is not reused: it has no ReLU on Q/K/V and adds an output
projection the reference does not have; its ``FeedForward`` matches and is reused.

Shapes: queries [B, N, H], keys [B, L, H], key mask [B, L] (True = real); K spaces of
d_k = H / K each.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.layers import FeedForward

from recbole_attn.explain import capture

SCORES = ("dot", "bilinear")
LAYER_NORM_EPS = 1e-8  # the reference's ``normalize``


class MultiSpaceAttention(nn.Module):
    """Attention of queries over keys in K spaces, residual and layer norm.

    - ``dot`` (reference): Q = ReLU(q W_Q), K = ReLU(s W_K), V = ReLU(s W_V), split into K
      spaces; A_k = softmax(Q_k K_k^T / sqrt(d_k)) with padding keys masked.
    - ``bilinear`` (paper): A_k = softmax(ReLU(q P)_k W_k s^T / sqrt(d_k)), W_k [d_k, H].

    C_k = A_k V_k; out = LN(q + concat_k C_k) (no output projection, as the reference).
    Dropout acts on the attention weights (as the reference).
    """

    def __init__(self, hidden_size: int, n_spaces: int, dropout: float, score: str = "dot"):
        super().__init__()
        self.n_spaces, self.d_k = n_spaces, hidden_size // n_spaces
        self.query = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        if score == "dot":
            self.key = nn.Linear(hidden_size, hidden_size)
        else:
            self.bilinear = nn.Parameter(torch.empty(n_spaces, self.d_k, hidden_size))  # W_k
            nn.init.xavier_uniform_(self.bilinear)
        self.score = score
        self.norm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.n_spaces, self.d_k).transpose(1, 2)  # [B, K, n, d_k]

    def forward(self, queries, keys, mask, need_weights: bool = False):
        """-> (out [B, N, H], A [B, K, N, L] or None).

        Without ``need_weights`` the fused ``scaled_dot_product_attention`` computes the same
        C_k without materialising A_k.
        """
        q = self._split(F.relu(self.query(queries)))
        v = self._split(F.relu(self.value(keys)))
        if self.score == "dot":
            k = self._split(F.relu(self.key(keys)))
        else:  # ReLU(qP)_k W_k s^T computed as ReLU(qP)_k (s W_k^T)^T
            k = torch.einsum("blh,kdh->bkld", keys, self.bilinear)
        # a row without any real behaviour attends to all (its output is never read)
        real = (mask | ~mask.any(1, keepdim=True))[:, None, None, :]  # [B, 1, 1, L]
        attn = None
        if need_weights or capture.active():
            logits = q @ k.transpose(-1, -2) / math.sqrt(self.d_k)
            attn = logits.masked_fill(~real, float("-inf")).softmax(-1)
            capture.record(self, attn)
            c = self.dropout(attn) @ v
        else:
            p = self.dropout.p if self.training else 0.0
            c = F.scaled_dot_product_attention(q, k, v, attn_mask=real, dropout_p=p)
        c = c.transpose(1, 2).reshape(queries.shape)  # concat_k C_k: [B, N, H]
        return self.norm(queries + c), attn


class AttentionBlock(nn.Module):
    """``MultiSpaceAttention`` then the point-wise feed-forward layer with residual and layer
    norm (RecBole's ``FeedForward``, ReLU: the reference's two 1x1 convolutions).

    Args:
        hidden_size: H.
        n_spaces: K (divides H).
        inner_size: width of the feed-forward layer (reference: H / 4).
        dropout: on attention weights and on the feed-forward output.
        score: ``dot`` or ``bilinear``.
    """

    def __init__(self, hidden_size: int, n_spaces: int, inner_size: int, dropout: float, score: str = "dot"):
        super().__init__()
        self.attention = MultiSpaceAttention(hidden_size, n_spaces, dropout, score)
        self.ffn = FeedForward(hidden_size, inner_size, dropout, "relu", LAYER_NORM_EPS)

    def forward(self, queries, keys, mask, need_weights: bool = False):
        """queries [B, N, H], keys [B, L, H], mask [B, L] -> (out [B, N, H], A [B, K, N, L] or None)."""
        out, attn = self.attention(queries, keys, mask, need_weights)
        return self.ffn(out), attn
