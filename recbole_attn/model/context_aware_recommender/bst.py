"""BST: Behavior Sequence Transformer.

Paper: Qiwei Chen, Huan Zhao, Wei Li, Pipei Huang, Wenwu Ou. "Behavior Sequence
Transformer for E-commerce Recommendation in Alibaba", DLP-KDD 2019, arXiv 1905.06874.

Like AttnDIN, BST subclasses ``SequentialRecommender`` because RecBole builds the history
fields (``item_id_list``, ``timestamp_list``, ``item_length``) only for sequential models.

Reference code: the paper has none; FuxiCTR's ``model_zoo/BST`` is followed where the paper
is silent (it concatenates the position embedding to the item embedding and feeds the target
item's embedding to the MLP beside the transformer output; DeepCTR's BST does the latter too).

Deviations from the paper / reference, with reasons:

- Position feature: pos(v_i) = t(v_t) - t(v_i) is bucketised with ``time_bucket``
  (log2 buckets of ``time_unit``) and embedded, then concatenated to the item embedding
  (paper Fig. 1, FuxiCTR; ``position_combine: add`` sums them instead, keeping the
  width). ``position_feature: order`` replaces the time gap by the reversed position
  (most recent history item 1, ..., the target 0), for data without timestamps.
  RecBole passes timestamps as float32: gaps of ~1e9-second Unix times are exact to
  ~1-2 minutes, far below the bucket widths used.
- Initialisation: Xavier normal (as the other target-item models), except the position
  table, which starts at zero (``position_init: zero``; the paper gives no init, FuxiCTR
  uses a fixed sinusoid). Reason: Xavier's std sqrt(2 / (rows + width)) gives the 32-row
  position table std ~0.14-0.18 against ~0.006 (item id) and ~0.026 (category) on the
  Taobao head's 55k items / 2.9k categories; the post-norm LayerNorm then scales every
  token by the position part, the item content stays ~4% of it, and the content term of
  the attention scores (quadratic in that scale) has no gradient to grow from: AUC 0.500
  on the Taobao head (3 seeds) although the target's category is in the history for 70%
  of positives and 5% of negatives. Zero start: the transformer input begins as the item
  embedding alone and the position part is learned from there (``position_init:
  xavier`` restores the old start).
- History is right-aligned before the transformer (most recent item next to the
  target), so every slot of the flattened output has a fixed meaning; padding slots
  are zero after the transformer (they never attend nor are attended to).
- Other features: the user profile (if loaded) and the target item's embedding
  (``target_in_mlp``; the paper's "Item Features" of the target, as in FuxiCTR and
  DeepCTR) are concatenated with the flattened transformer output; context and cross
  features are not modelled.
- Training: RecBole's labelled protocol with sampled negatives and Adam; the paper
  trains on Taobao clicks with its own optimiser settings.
- Feed-forward width ``inner_size`` is not given in the paper (default 4x width).
"""

from __future__ import annotations

from logging import getLogger

import torch
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_attn import evaluator  # noqa: F401  (registers the value metric GAUC)
from recbole_attn.errors import ConfigError
from recbole_attn.layers import (
    MLP,
    ItemFeatureEmbedding,
    time_bucket,
    user_feature_embedding,
    xavier_init,
)

POSITION_FEATURES = ("time", "order")
POSITION_COMBINES = ("concat", "add")
POSITION_INITS = ("zero", "xavier")


class TransformerBlock(nn.Module):
    """Post-norm transformer layer of the paper (Sec. 2.3).

    S' = LayerNorm(S + Dropout(MH(S))); F = LayerNorm(S' + Dropout(W2 LeakyReLU(W1 S' + b1) + b2)).
    """

    def __init__(self, dim: int, n_heads: int, inner_size: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, inner_size), nn.LeakyReLU(), nn.Linear(inner_size, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        """x [B, T, d], mask [B, T] (True = real) -> (out [B, T, d], head-averaged weights [B, T, T])."""
        attn_out, weights = self.attn(x, x, x, key_padding_mask=~mask, need_weights=True)
        x = self.norm1(x + self.dropout(attn_out))
        x = self.norm2(x + self.dropout(self.ffn(x)))
        return x, weights


class BST(SequentialRecommender):
    r"""BST (Chen et al., DLP-KDD 2019): a transformer over the behaviour sequence plus the target.

    Equations / figure of the paper -> methods:

    - Embedding layer (Sec. 2.2, Fig. 1): each item of [v_1..v_n, v_t] as [item_id (+)
      its features (+) the embedding of its position feature pos(v_i) = t(v_t) - t(v_i)]
      -> ``_sequence``.
    - Transformer layer (Sec. 2.3, eq. 1-5): multi-head self-attention, residual,
      LayerNorm, LeakyReLU feed-forward, ``n_layers`` blocks -> ``TransformerBlock``;
      the target's attention over the history -> ``attention_weights``.
    - MLP layers (Sec. 2.4): concat(flattened transformer output, other features: user
      profile, target item) ->
      1024-512-256 LeakyReLU -> logit -> ``forward``; sigmoid -> ``predict``;
      cross-entropy loss (eq. 6) -> ``calculate_loss``.

    Tensor shapes: B batch, L ``MAX_ITEM_LIST_LENGTH``, T = L + 1, d transformer width
    (``embedding_size * (1 + #item fields + 1 if position_combine is concat)``), N items.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL = config["LABEL_FIELD"]
        self.embedding_size: int = config["embedding_size"]
        self.n_layers: int = config["n_layers"]
        self.n_heads: int = config["n_heads"]
        self.inner_size: int | None = config["inner_size"]
        self.dropout_prob: float = config["dropout_prob"]
        self.mlp_hidden_size: list[int] = list(config["mlp_hidden_size"])
        self.activation: str = config["activation"]
        self.position_feature: str = str(config["position_feature"]).lower()
        self.time_unit: float = float(config["time_unit"])
        self.num_time_buckets: int = config["num_time_buckets"]
        self.full_sort_chunk: int = config["full_sort_chunk"]
        self.target_in_mlp: bool = bool(config["target_in_mlp"])
        self.position_combine: str = str(config["position_combine"]).lower()
        self.position_init: str = str(config["position_init"]).lower()
        for key, choices in (
            ("position_feature", POSITION_FEATURES),
            ("position_combine", POSITION_COMBINES),
            ("position_init", POSITION_INITS),
        ):
            if getattr(self, key) not in choices:
                raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {config[key]!r}")
        self.TIME = config["TIME_FIELD"]
        if self.position_feature == "time":
            self.TIME_SEQ = f"{self.TIME}{config['LIST_SUFFIX']}" if self.TIME else None
            if not self.TIME or self.TIME not in dataset.field2type or self.TIME_SEQ not in dataset.field2type:
                raise ConfigError(
                    f"BST's position feature needs the time of every behaviour, but TIME_FIELD="
                    f"{self.TIME!r} is not a loaded field of dataset '{config['dataset']}' (fields: "
                    f"{', '.join(sorted(f for f in dataset.field2type if not f.endswith(config['LIST_SUFFIX'])))}). "
                    "Fix: set TIME_FIELD and load it (load_col), or set position_feature: order "
                    "to use the reversed position in the history instead."
                )
            if self.time_unit <= 0:
                raise ConfigError(f"time_unit must be > 0, got {self.time_unit}")
            n_positions = self.num_time_buckets
        else:
            n_positions = self.max_seq_length + 1

        self.item_embedding = ItemFeatureEmbedding(dataset, self.embedding_size, config["item_fields"])
        self.user_embedding = user_feature_embedding(dataset, self.embedding_size, config["user_fields"])
        concat = self.position_combine == "concat"
        d = self.item_embedding.out_dim + (self.embedding_size if concat else 0)
        if d % self.n_heads:
            raise ConfigError(
                f"BST's transformer width {d} (embedding_size {self.embedding_size} x "
                f"{1 + len(self.item_embedding.fields) + concat} parts) is not divisible by n_heads={self.n_heads}; "
                "change embedding_size or n_heads"
            )
        self.position_embedding = nn.Embedding(n_positions, self.embedding_size if concat else self.item_embedding.out_dim)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, self.n_heads, self.inner_size or 4 * d, self.dropout_prob) for _ in range(self.n_layers)
        )
        du = self.user_embedding.out_dim if self.user_embedding is not None else 0
        dt = self.item_embedding.out_dim if self.target_in_mlp else 0
        self.mlp = MLP((self.max_seq_length + 1) * d + du + dt, self.mlp_hidden_size, self.activation, self.dropout_prob)
        self.head = nn.Linear(self.mlp.out_dim, 1)
        self.loss_fct = nn.BCEWithLogitsLoss()
        self.apply(xavier_init)
        if self.position_init == "zero":
            nn.init.zeros_(self.position_embedding.weight)
        self._check_time_scale(dataset)

    def _check_time_scale(self, dataset) -> None:
        if self.position_feature != "time":
            return
        times = dataset.inter_feat[self.TIME]
        span = float(times.max() - times.min()) if len(times) else 0.0
        if span < self.time_unit:
            getLogger().warning(
                f"BST: all time gaps are below time_unit={self.time_unit} (timestamps span {span:g}), so "
                "every behaviour falls in position bucket 0. Normalised timestamps? Set normalize_all: "
                "False (BST.yaml does) or a smaller time_unit."
            )

    def _sequence(self, interaction) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded [history right-aligned, target] [B, T, d] and its mask [B, T] (True = real)."""
        hist, real = self._history_tokens(interaction)
        return self._with_target(hist, real, interaction[self.ITEM_ID])

    def _history_tokens(self, interaction) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded history, right-aligned [B, L, d] (0 at padding), and its mask [B, L]."""
        seq, length = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        b, L = seq.shape
        # right-align: slot k holds history index k - (L - length); negative -> padding
        src = torch.arange(L, device=seq.device).unsqueeze(0) - (L - length).unsqueeze(1)  # [B, L]
        real = src >= 0
        src = src.clamp(min=0)
        items = torch.where(real, seq.gather(1, src), torch.zeros_like(seq))
        if self.position_feature == "time":
            times = interaction[self.TIME_SEQ].gather(1, src)
            gap = interaction[self.TIME].unsqueeze(1) - times
            positions = time_bucket(gap, self.num_time_buckets, self.time_unit)
        else:  # reversed position: most recent history item 1
            positions = (L - torch.arange(L, device=seq.device)).unsqueeze(0).expand(b, L)
        positions = torch.where(real, positions, torch.zeros_like(positions))
        return self._token(items, positions) * real.unsqueeze(-1), real

    def _token(self, items: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Item (+) position embedding (concat or sum): [...] ids -> [..., d]."""
        if self.position_combine == "concat":
            return torch.cat([self.item_embedding(items), self.position_embedding(positions)], -1)
        return self.item_embedding(items) + self.position_embedding(positions)

    def _with_target(self, hist: torch.Tensor, real: torch.Tensor, items: torch.Tensor):
        """History tokens [B, L, d] and mask [B, L] with each row's target [B] (position 0)
        appended -> ([B, T, d], [B, T])."""
        target = self._token(items, torch.zeros_like(items)).unsqueeze(1)
        mask = torch.cat([real, torch.ones_like(real[:, :1])], 1)
        return torch.cat([hist, target], 1), mask

    def _encode(self, interaction, tokens: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Transformer output [B, T, d], mask [B, T] and last-block weights [B, T, T] of the
        rows of ``interaction`` (or of the given (tokens, mask))."""
        x, mask = self._sequence(interaction) if tokens is None else tokens
        weights = None
        for block in self.blocks:
            x, weights = block(x, mask)
            x = x * mask.unsqueeze(-1)  # padding slots carry nothing into the next block / the MLP
        return x, mask, weights

    def _logits(self, x: torch.Tensor, user: torch.Tensor | None, items: torch.Tensor) -> torch.Tensor:
        """MLP over [flattened transformer output [N, T, d], user [N, U], target [N]] -> [N]."""
        parts = [x.flatten(1)] + ([user] if user is not None else [])
        if self.target_in_mlp:
            parts.append(self.item_embedding(items))
        return self.head(self.mlp(torch.cat(parts, -1))).squeeze(-1)

    def _user(self, interaction) -> torch.Tensor | None:
        return self.user_embedding(interaction[self.USER_ID]) if self.user_embedding is not None else None

    def forward(self, interaction) -> torch.Tensor:
        """Logits [B]."""
        x, _, _ = self._encode(interaction)
        return self._logits(x, self._user(interaction), interaction[self.ITEM_ID])

    def attention_weights(self, interaction) -> torch.Tensor:
        """Attention [B, L] of the target (query) over the history in the last block, averaged
        over heads, in the order of ``item_id_list`` (0 at padding); the rest of each row's
        unit mass is on the target itself."""
        _, _, weights = self._encode(interaction)
        return self.history_order(weights[:, -1, :-1], interaction[self.ITEM_SEQ_LEN])

    @staticmethod
    def history_order(slots: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """Values of the right-aligned history slots [B, ..., L] in the order of
        ``item_id_list`` (0 at padding); ``length`` [B]."""
        L = slots.shape[-1]
        slot = torch.arange(L, device=slots.device) + (L - length).view(-1, *[1] * (slots.dim() - 1))  # idx -> slot
        out = slots.gather(-1, slot.clamp(max=L - 1).expand_as(slots))
        return torch.where(slot < L, out, torch.zeros_like(out))

    def calculate_loss(self, interaction) -> torch.Tensor:
        return self.loss_fct(self.forward(interaction), interaction[self.LABEL].float())

    def predict(self, interaction) -> torch.Tensor:
        """Click probabilities [B]."""
        return torch.sigmoid(self.forward(interaction))

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Probabilities [B, N] for every item, ``full_sort_chunk`` items at a time; equals
        ``predict`` pair by pair. The history tokens (embeddings, positions) and the user
        profile are built once per row; the transformer sees the target, so it runs per pair."""
        hist, real = self._history_tokens(interaction)
        user = self._user(interaction)
        b = hist.shape[0]
        scores = []
        for items in torch.arange(self.n_items, device=hist.device).split(self.full_sort_chunk):
            c = items.numel()
            pair_items = items.repeat(b)  # [B * C], row-major pairs
            tokens = self._with_target(hist.repeat_interleave(c, 0), real.repeat_interleave(c, 0), pair_items)
            x, _, _ = self._encode(interaction, tokens)
            pair_user = user.repeat_interleave(c, 0) if user is not None else None
            scores.append(torch.sigmoid(self._logits(x, pair_user, pair_items)).view(b, c))
        return torch.cat(scores, 1)
