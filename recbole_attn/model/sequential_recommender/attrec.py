"""AttRec: self-attentive metric learning for next-item recommendation.

Paper: Shuai Zhang, Yi Tay, Lina Yao, Aixin Sun. "Next Item Recommendation with
Self-Attention", arXiv 1808.06414 (2018); also published as "Next Item Recommendation
with Self-Attentive Metric Learning", AAAI 2019.

Reference code: the first author's DeepRec, github.com/cheungdaven/DeepRec @ 68a34cb,
``models/seq_rec/AttRec.py`` (``_distance_self_attention``, run by ``test/testSeqRec.py``
with the constructor's defaults). Defaults follow that code; the paper's variants are
options:

- d = 150 (``build_network``'s num_factor), w = 0.2 (``self.alpha``), margin 0.5, L = 5.
- ``diagonal_mask: after_softmax``: the code takes the softmax over the window, then sets
  each item's weight on itself to 0 without renormalising; ``before_softmax`` masks it
  before the softmax (rows sum to 1).
- ``clip_norm: False``: the code defines the unit-ball clipping of U, V and X but never
  runs it (the ops are commented out of the training step); True = the paper's clipping.
- ``embedding_init: code``: U, V, X ~ truncated normal, std 0.001; W Xavier.
- The code's objective: the hinge loss summed over the batch (``loss_reduction: sum``)
  plus 0.001 x l2_loss of the whole U, V and X tables (``reg_weight``) and 0.01 x
  l2_loss(W) (``attention_reg_weight``); Adagrad, learning rate 0.05, accumulator 0.05
  (``learner: adagrad``, ``adagrad_initial_accumulator``); 1000 windows per batch.
  ml-100k, ``benchmarks/presets/ref-ml-100k.yaml`` (early stopping), 3 seeds: test NDCG@10
  0.0351 +- 0.0051 with our earlier settings (Adam 0.001, mean loss, no L2, normal std
  1/sqrt(d), d = 100, w = 0.3, clipping, diagonal masked before the softmax), 0.0473 +-
  0.0015 with the code's. Seed 1, one change at a time from the earlier settings: w 0.2
  0.0415, d 150 0.0461, no clipping 0.0301 (0.0292 before); the code's sizes and mask
  with the earlier init and optimiser 0.0336, with the code's init and Adam 0.0444.

Deviations from the code:

- Training targets: the code trains on the T = 3 next items after each window of L items.
  RecBole's sequential pipeline augments every prefix of a user's training sequence into
  one (history, next item) example, so every training item is a target of the window
  before it, one target per example (T = 1 per example, all targets covered); a batch of
  1000 examples holds 1000 targets where the code's holds 3000.
- Short histories: the code attends over padding rows of its embedding table; here padded
  positions get no weight and m averages the real positions only. A window with a single
  real item then has nothing left to attend to (m = 0 with ``after_softmax``; with
  ``before_softmax`` that item attends to itself).
- The code builds a second user table (its ``V``: regularised, never scored) and item
  tables ``A``, ``W`` and ``b`` that no score reads; they are left out (no effect).
- With ``clip_norm: True``, clipping is a differentiable projection ``e * min(1, 1/||e||)``
  of every embedding read in the forward pass, so ``predict`` and ``full_sort_predict`` see
  the same clipped vectors; the paper clips the stored rows after each update.
- Timing signal: sin and cos interleaved over the channels, timescales 10000^(2i/d); the
  code puts the sines before the cosines with timescales from 1 to 10^4 (the same signals,
  permuted channels, slightly different frequencies).
- ``score_mode: inner`` (inner products, BPR loss) is the paper's dot-product variant
  in its ablation; ``dist`` is the model of the paper and the code.

Evaluation note: RecBole's sequential protocol ranks all items, the ones already in the
user's history included. The long-term term pulls U_u towards every item the user
consumed, so AttRec ranks those high; expect lower numbers under this protocol than
under one that ranks only unseen items.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_attn.errors import ConfigError
from recbole_attn.explain import capture

SCORE_MODES = ("dist", "inner")
DIAGONAL_MASKS = ("after_softmax", "before_softmax")
EMBEDDING_INITS = ("code", "scaled")
LOSS_REDUCTIONS = ("sum", "mean")


def timing_signal(length: int, dim: int) -> torch.Tensor:
    """Sinusoidal timing signal TE(t, 2i) = sin(t / 10000^(2i/d)), TE(t, 2i+1) = cos(...): [L, d]."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.pow(10000.0, torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    signal = torch.zeros(length, dim)
    signal[:, 0::2] = torch.sin(position / div)
    signal[:, 1::2] = torch.cos(position / div[: dim // 2])
    return signal


def clip_to_unit_ball(x: torch.Tensor) -> torch.Tensor:
    """Scale every vector of norm > 1 back onto the unit sphere: [..., d] -> [..., d]."""
    norm = x.norm(dim=-1, keepdim=True)
    return x / norm.clamp(min=1.0)


class AttRec(SequentialRecommender):
    r"""AttRec (Zhang et al.): short-term self-attention plus long-term metric learning.

    Equations of the paper -> methods:

    - Query/key projection with a shared ReLU layer, timing signal added to queries and
      keys only: Q' = ReLU((X + TE) W), K' = Q' -> ``forward``.
    - Affinity s = softmax(Q' K'^T / sqrt(d)) over the real items, the diagonal zeroed
      (after the softmax as the code, or before: ``diagonal_mask``); output
      a = s X (values are the raw sequence embeddings); short-term intent
      m = mean over the window of a -> ``forward``.
    - Score y(u, i) = w ||U_u - V_i||^2 + (1 - w) ||m - X_i||^2 (smaller is better;
      ``predict`` returns -y) -> ``_score`` / ``full_sort_predict``.
    - Hinge loss max(0, y(u, i+) - y(u, i-) + gamma) -> ``calculate_loss``.

    Tensor shapes: B batch, L ``seq_window``, d ``embedding_size``, N items.
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if not self.USER_ID or self.USER_ID not in dataset.field2type:
            raise ConfigError(
                f"AttRec needs a user id field for its long-term user embedding, but "
                f"USER_ID_FIELD={self.USER_ID!r} is not in dataset '{config['dataset']}' "
                f"(fields: {', '.join(sorted(dataset.field2type))}). Set USER_ID_FIELD and "
                "load that column (load_col)."
            )
        self.embedding_size: int = config["embedding_size"]
        self.seq_window: int = config["seq_window"]
        self.omega: float = config["omega"]
        self.margin: float = config["margin"]
        self.score_mode: str = config["score_mode"]
        self.use_timing_signal: bool = config["use_timing_signal"]
        self.clip_norm: bool = config["clip_norm"]
        self.diagonal_mask: str = config["diagonal_mask"]
        self.embedding_init: str = config["embedding_init"]
        self.loss_reduction: str = config["loss_reduction"]
        self.reg_weight: float = config["reg_weight"]
        self.attention_reg_weight: float = config["attention_reg_weight"]
        for key, allowed in (("score_mode", SCORE_MODES), ("diagonal_mask", DIAGONAL_MASKS),
                             ("embedding_init", EMBEDDING_INITS), ("loss_reduction", LOSS_REDUCTIONS)):
            if config[key] not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {config[key]!r}")
        if self.seq_window < 1:
            raise ConfigError(f"seq_window must be >= 1, got {self.seq_window}")

        d = self.embedding_size
        self.n_users = dataset.num(self.USER_ID)
        self.user_embedding = nn.Embedding(self.n_users, d)  # U
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)  # V
        self.seq_item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)  # X
        self.query_key = nn.Linear(d, d, bias=False)  # shared W_Q = W_K
        self.register_buffer("timing", timing_signal(self.seq_window, d), persistent=False)
        self.register_buffer("eye", torch.eye(self.seq_window, dtype=torch.bool), persistent=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            if self.embedding_init == "code":  # tf.truncated_normal(stddev=0.001): cut at 2 std
                nn.init.trunc_normal_(module.weight, std=0.001, a=-0.002, b=0.002)
            else:
                nn.init.normal_(module.weight, std=1.0 / math.sqrt(self.embedding_size))
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        return clip_to_unit_ball(x) if self.clip_norm else x

    def last_window(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor):
        """The last L items, right-aligned: items [B, L] and mask [B, L] (True = real item)."""
        offsets = torch.arange(self.seq_window, device=item_seq.device) - self.seq_window
        index = item_seq_len.unsqueeze(1) + offsets  # [B, L], most recent item last
        mask = index >= 0
        items = item_seq.gather(1, index.clamp(min=0))
        return items, mask

    def attention(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor):
        """Self-attention over the last L items.

        Returns:
            attn [B, L, L] (rows sum to 1; padding and the diagonal get 0), the window's
            embeddings x [B, L, d] and its mask [B, L] (True = real item).
        """
        items, mask = self.last_window(item_seq, item_seq_len)
        x = self._clip(self.seq_item_embedding(items))  # [B, L, d]
        qk_in = x + self.timing if self.use_timing_signal else x
        qk = F.relu(self.query_key(qk_in))  # [B, L, d]
        affinity = qk @ qk.transpose(1, 2) / math.sqrt(self.embedding_size)  # [B, L, L]
        if self.diagonal_mask == "after_softmax":  # code: softmax over the real items, then w_ii = 0
            attn = affinity.masked_fill(~mask.unsqueeze(1), float("-inf")).softmax(-1)
            attn = attn.masked_fill(self.eye, 0.0)
        else:  # keys: real items, not the query itself; a lone item attends to itself
            allowed = mask.unsqueeze(1) & ~self.eye
            allowed = allowed | (self.eye & ~allowed.any(-1, keepdim=True))
            attn = affinity.masked_fill(~allowed, float("-inf")).softmax(-1)
        capture.record(self, attn)
        return attn, x, mask

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """Short-term intent m, the mean of the attended window: item_seq [B, T], item_seq_len [B] -> [B, d]."""
        attn, x, mask = self.attention(item_seq, item_seq_len)
        out = attn @ x  # [B, L, d]
        weights = mask.unsqueeze(-1).to(out.dtype)
        return (out * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def _score(self, user: torch.Tensor, m: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Score (higher is better) of one item per row: user [B], m [B, d], item [B] -> [B]."""
        u = self._clip(self.user_embedding(user))
        v = self._clip(self.item_embedding(item))
        x = self._clip(self.seq_item_embedding(item))
        if self.score_mode == "inner":
            return self.omega * (u * v).sum(-1) + (1 - self.omega) * (m * x).sum(-1)
        dist = self.omega * (u - v).pow(2).sum(-1) + (1 - self.omega) * (m - x).pow(2).sum(-1)
        return -dist

    def score_terms(self, interaction, items: torch.Tensor) -> torch.Tensor:
        """Per-dimension terms of the score of each (row, item), which sum to ``predict``'s
        score: items [B, K] -> [B, K, 2d] (long-term terms, then short-term). PRM reads them
        as its personalised vector."""
        m = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]).unsqueeze(1)  # [B, 1, d]
        u = self._clip(self.user_embedding(interaction[self.USER_ID])).unsqueeze(1)  # [B, 1, d]
        v = self._clip(self.item_embedding(items))  # [B, K, d]
        x = self._clip(self.seq_item_embedding(items))
        if self.score_mode == "inner":
            return torch.cat([self.omega * u * v, (1 - self.omega) * m * x], dim=-1)
        return -torch.cat([self.omega * (u - v).pow(2), (1 - self.omega) * (m - x).pow(2)], dim=-1)

    def calculate_loss(self, interaction) -> torch.Tensor:
        user = interaction[self.USER_ID]
        m = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        pos = self._score(user, m, interaction[self.POS_ITEM_ID])
        neg = self._score(user, m, interaction[self.NEG_ITEM_ID])
        if self.score_mode == "inner":
            loss = -F.logsigmoid(pos - neg)
        else:
            loss = F.relu(neg - pos + self.margin)
        loss = loss.sum() if self.loss_reduction == "sum" else loss.mean()
        return loss + self.regulariser()

    def regulariser(self) -> torch.Tensor:
        """The code's L2 terms: reg_weight x (|U|^2 + |V|^2 + |X|^2) / 2 over the whole tables,
        plus attention_reg_weight x |W|^2 / 2 (tf.nn.l2_loss and the dense layer's regulariser)."""
        tables = (self.user_embedding.weight, self.item_embedding.weight, self.seq_item_embedding.weight)
        reg = self.reg_weight * sum(t.pow(2).sum() for t in tables) / 2
        return reg + self.attention_reg_weight * self.query_key.weight.pow(2).sum() / 2

    def predict(self, interaction) -> torch.Tensor:
        """Scores of the (user, history, item) rows: [B]."""
        m = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self._score(interaction[self.USER_ID], m, interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Scores of every item for each row, by the same formula as ``predict``: [B, N].

        Both terms in one matmul: [w u, (1 - w) m] [B, 2d] @ [v, x]^T [2d, N]; the distance
        mode adds the squared norms (|a - b|^2 = |a|^2 - 2 a.b + |b|^2)."""
        m = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        u = self._clip(self.user_embedding(interaction[self.USER_ID]))  # [B, d]
        v = self._clip(self.item_embedding.weight)  # [N, d]
        x = self._clip(self.seq_item_embedding.weight)  # [N, d]
        dot = torch.cat([self.omega * u, (1 - self.omega) * m], -1) @ torch.cat([v, x], -1).T  # [B, N]
        if self.score_mode == "inner":
            return dot
        rows = self.omega * u.pow(2).sum(-1, keepdim=True) + (1 - self.omega) * m.pow(2).sum(-1, keepdim=True)
        items = self.omega * v.pow(2).sum(-1) + (1 - self.omega) * x.pow(2).sum(-1)
        return -(rows - 2 * dot + items)
