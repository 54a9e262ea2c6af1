"""AttRec: self-attentive metric learning for next-item recommendation.

Paper: Shuai Zhang, Yi Tay, Lina Yao, Aixin Sun. "Next Item Recommendation with
Self-Attention", arXiv 1808.06414 (2018); also published as "Next Item Recommendation
with Self-Attentive Metric Learning", AAAI 2019.

Deviations from the paper:

- Training targets: the paper trains on the T next items after each window of L items.
  RecBole's sequential pipeline augments every prefix of a user's training sequence into
  one (history, next item) example, so every training item is a target of the window
  before it, one target per example (T = 1 per example, all targets covered).
- Unit-ball clipping is applied in the forward pass as a differentiable projection
  ``e * min(1, 1/||e||)`` of every embedding that is read, so ``predict`` and
  ``full_sort_predict`` see the same clipped vectors; the paper clips the stored rows
  after each update.
- The hinge loss is averaged over the batch instead of summed (a learning-rate scale);
  the paper's L2 term on all parameters is RecBole's ``weight_decay`` option.
- A window with a single real item has nothing to attend to once the diagonal is masked;
  that item then attends to itself (the paper does not say).
- ``score_mode: inner`` (inner products, BPR loss) is the paper's dot-product variant
  in its ablation; ``dist`` is the model of the paper.

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
    - Affinity s = softmax(Q' K'^T / sqrt(d)), diagonal and padding masked; output
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
        if self.score_mode not in SCORE_MODES:
            raise ConfigError(
                f"score_mode must be one of {', '.join(SCORE_MODES)}, got {self.score_mode!r}"
            )
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
        allowed = mask.unsqueeze(1) & ~self.eye  # keys: real items, not the query itself
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
            return -F.logsigmoid(pos - neg).mean()
        return F.relu(neg - pos + self.margin).mean()

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
