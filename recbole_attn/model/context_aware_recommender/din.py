"""AttnDIN: Deep Interest Network, following its official code by default.

Paper: Guorui Zhou, Xiaoqiang Zhu, Chenru Song, Ying Fan, Han Zhu, Xiao Ma, Yanghui Yan,
Junqi Jin, Han Li, Kun Gai. "Deep Interest Network for Click-Through Rate Prediction",
KDD 2018, arXiv 1706.06978.
Reference code: github.com/zhougr1993/DeepInterestNetwork, ``din/model.py`` (the model
``din/train.py`` runs) and ``din/model_dice.py``, commit 9765f96202f8.

Why a SequentialRecommender in ``context_aware_recommender/``: the model needs the user's
behaviour history (``item_id_list``, ``item_length``) next to each scored row, and RecBole
builds those fields only in its ``SequentialDataset``, which it creates for
``ModelType.SEQUENTIAL`` models (RecBole's own DIN subclasses ``SequentialRecommender``
for the same reason). The folder groups the target-item scoring (CTR) models.

Where the paper and the reference code differ, the code is the default and the paper an
option (AttnDIN.yaml). What each choice measured is in docs/deviations.md (AttnDIN).

- Attention: the code's unit is an MLP 80-40 with sigmoid, its scores / sqrt(D) are
  softmax-normalised over the real positions (``attention_activation: sigmoid``,
  ``attention_softmax: True``, ``attention_scale: True``); the paper (Sec. 4.3) keeps
  the raw weights and draws PReLU/Dice.
- Pooled interest: the code batch-normalises it and applies a linear map D -> D
  (``hist_bn``, ``hist_fcn``; ``pooled_projection: True``); the paper has neither.
- Prediction MLP input: the code feeds [u, e_a, u * e_a] (``mlp_product: True``) through
  a batch normalisation (``mlp_input_norm``) and feeds no user profile (its user
  embedding is defined but unused; ``user_fields: []``); the paper's Fig. 2 concatenates
  user profile, pooled interest and candidate.
- Prediction MLP: the code's 80-40 with Dice (``model_dice.py``, the activation the
  paper proposes; ``model.py`` uses sigmoid: ``activation: sigmoid``), then one logit
  plus a per-item bias b_a (zero init; ``item_bias: True``); the paper: 200-80-2 with
  Dice (``mlp_hidden_size: [200, 80]``). The code's 80-40 units have less capacity than
  RecBole's DIN (256-256-256 in both places, and a BatchNorm1d after each hidden Linear:
  ``mlp_hidden_norm: batch``). Configured with all of RecBole's choices, this model ties
  RecBole's DIN trained to early stopping on ml-100k; at the code's sizes it wins on
  ml-100k at the 3-epoch CPU preset and loses on Beauty at that budget and on ml-100k
  converged: the gap is the reference code's configuration, not this implementation,
  and the defaults stay the code's.
- Embedding widths: the code embeds the item id and its category in 64 each, so an
  item is 128 wide (its ``hidden_units``; the attention and ``hist_fcn`` work at 128):
  ``embedding_size: 64`` per part; the paper uses 12 (``embedding_size: 12``).
- Regularisation: the code has none (``reg_type: none``); the paper's mini-batch aware
  regularisation is ``reg_type: mba``: n_j is the number of training examples whose
  target item is j (for a feature value: of items/users carrying it), at least 1; the
  paper counts occurrences of the feature id in all samples. The term is
  ``reg_weight * sum_j ||w_j||^2 / n_j`` over the distinct rows j read in the batch
  (the paper's update, eq. 8, is its gradient up to a factor 2). Plain ``l2`` is the
  same sum over every row of every embedding table; MLP weights can be decayed with
  RecBole's ``weight_decay``. The item bias is never regularised.

Deviations from both:

- ``mlp_input_norm: batch`` (default) trains the normalisation as BatchNorm (batch
  statistics in training, running statistics at inference). The reference code calls
  ``tf.layers.batch_normalization`` without ``training=True``, so its graph keeps the
  initial moving statistics and computes a learned per-channel affine: ``affine``
  reproduces that. BatchNorm is what the layer is meant to be (its moving statistics
  exist to be updated). Which is best depends on the data (docs/deviations.md).
- Dice: the paper's (eq. 9: batch statistics in training, running ones at inference).
  The code's ``Dice.py`` also calls ``tf.layers.batch_normalization`` at
  ``training=False``, so its gate is sigmoid(beta * x) with a learned beta (init 0).
- Training negatives: RecBole's labelled protocol with sampled negatives (one uniform
  negative per positive in training, 100 per positive in evaluation); the paper's
  datasets come with impressions and clicks, the code's with one negative per positive.
- Optimiser: RecBole's Adam (learning_rate); the code uses SGD (lr 1.0, gradient
  clipping 5) with batch 32, the paper SGD with decay.
- Item features: the code's items have one category each, [item 64 (+) category 64];
  a token_seq feature (Beauty's attribute ids, ml-100k's genres) is one part, the mean
  of its tokens' embeddings (as RecBole's DIN pools it).
- Embeddings and linear weights are Xavier-initialised, as in the code (TensorFlow's
  default ``glorot_uniform`` has the same variance 2 / (rows + width) as Xavier normal).
- Context features are not modelled (RecBole's interactions carry none by default).
- Padding never enters the attention MLP (so it cannot move Dice's batch statistics).
"""

from __future__ import annotations

import torch
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import FeatureType, InputType

from recbole_attn import evaluator  # noqa: F401  (registers the value metric GAUC)
from recbole_attn.errors import ConfigError
from recbole_attn.layers import (
    MLP,
    FeatureTableEmbedding,
    ItemFeatureEmbedding,
    TargetAttention,
    full_sort_in_chunks,
    mlp_input_norm,
    user_feature_embedding,
    xavier_init,
)

REG_TYPES = ("mba", "l2", "none")


def table_frequencies(emb: FeatureTableEmbedding, id_counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Training frequency of every row of every embedding table of ``emb``.

    ``id_counts`` [num ids] counts training examples per id; a feature value's count is
    the sum over the ids carrying it (token_seq: each token). Counts are at least 1.
    """
    out = {}
    if emb.include_id:
        out["id"] = id_counts.float().clamp(min=1)
    for field in emb.fields:
        if emb.types[field] == FeatureType.FLOAT:
            continue
        values = getattr(emb, f"table_{field}")  # [num ids] or [num ids, S]
        weights = id_counts.float()
        if values.dim() == 2:
            weights = weights.unsqueeze(1).expand_as(values)
        counts = torch.zeros(emb.embeddings[field].num_embeddings)
        counts.index_add_(0, values.reshape(-1), weights.reshape(-1))
        out[field] = counts.clamp(min=1)
    return out


def embedding_tables(emb: FeatureTableEmbedding) -> dict[str, nn.Embedding]:
    tables = {"id": emb.id_embedding} if emb.include_id else {}
    tables.update({f: m for f, m in emb.embeddings.items() if isinstance(m, nn.Embedding)})
    return tables


class AttnDIN(SequentialRecommender):
    r"""DIN (Zhou et al., KDD 2018): target attention over the behaviour history.

    Equations of the paper (and lines of the reference code) -> methods:

    - Embedding of a goods: [goods_id (+) its features] (Sec. 4.1) for history and
      candidate alike -> ``ItemFeatureEmbedding`` in ``_attend``.
    - Local activation unit, eq. 3: v_U(A) = sum_j a(e_j, v_A) e_j, a = Linear(MLP(
      [e_j, v_A, e_j - v_A, e_j * v_A])) (code: / sqrt(D), softmax) -> ``TargetAttention``;
      weights of a scored pair -> ``attention_weights``.
    - Code: u = Linear(BN(v_U(A))) (``hist_bn``, ``hist_fcn``) -> ``interest``.
    - Fig. 2 / code: BN([user profile,] u, v_A, u * v_A) -> MLP -> logit + b_A ->
      ``mlp_input`` and ``forward``; sigmoid -> ``predict``.
    - Dice, eq. 9 -> ``recbole_attn.layers.Dice``.
    - Ranking all items (eval mode): eq. 3's first layer split into a history, a candidate
      and a product term, the history embedded once per row -> ``full_sort_predict``.
    - Loss, eq. 2 (log loss) plus mini-batch aware regularisation, eq. 6-8 ->
      ``calculate_loss`` / ``regularization``.

    Tensor shapes: B batch, L ``MAX_ITEM_LIST_LENGTH``, D item embedding width
    (``embedding_size * (1 + #item fields)``), U user profile width, N items.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL = config["LABEL_FIELD"]
        self.embedding_size: int = config["embedding_size"]
        self.mlp_hidden_size: list[int] = list(config["mlp_hidden_size"])
        self.activation: str = config["activation"]
        self.attention_mlp: list[int] = list(config["attention_mlp"])
        self.attention_activation: str = config["attention_activation"]
        self.attention_softmax: bool = config["attention_softmax"]
        self.attention_scale: bool = config["attention_scale"]
        self.pooled_projection: bool = config["pooled_projection"]
        self.mlp_product: bool = config["mlp_product"]
        self.mlp_input_norm: str = str(config["mlp_input_norm"]).lower()
        self.mlp_hidden_norm: str = str(config["mlp_hidden_norm"]).lower()
        self.use_item_bias: bool = config["item_bias"]
        self.dropout_prob: float = config["dropout_prob"]
        self.reg_type: str = str(config["reg_type"]).lower()
        self.reg_weight: float = config["reg_weight"]
        self.full_sort_chunk: int = config["full_sort_chunk"]
        if self.reg_type not in REG_TYPES:
            raise ConfigError(f"reg_type must be one of {', '.join(REG_TYPES)}, got {config['reg_type']!r}")

        self.item_embedding = ItemFeatureEmbedding(dataset, self.embedding_size, config["item_fields"])
        self.user_embedding = user_feature_embedding(dataset, self.embedding_size, config["user_fields"])
        d = self.item_embedding.out_dim
        du = self.user_embedding.out_dim if self.user_embedding is not None else 0
        scale = d**-0.5 if self.attention_scale else 1.0
        self.attention = TargetAttention(
            d, self.attention_mlp, self.attention_activation, self.attention_softmax, scale=scale
        )
        self.interest = (
            nn.Sequential(mlp_input_norm(self.mlp_input_norm, d), nn.Linear(d, d))
            if self.pooled_projection
            else nn.Identity()
        )
        self.mlp_in_dim = du + (3 if self.mlp_product else 2) * d
        self.mlp_norm = mlp_input_norm(self.mlp_input_norm, self.mlp_in_dim)
        self.mlp = MLP(self.mlp_in_dim, self.mlp_hidden_size, self.activation, self.dropout_prob, self.mlp_hidden_norm)
        self.head = nn.Linear(self.mlp.out_dim, 1)
        self.item_bias = nn.Embedding(self.n_items, 1, padding_idx=0) if self.use_item_bias else None
        self.loss_fct = nn.BCEWithLogitsLoss()

        item_counts = torch.bincount(dataset.inter_feat[self.ITEM_ID], minlength=self.n_items)
        self._register_frequencies("item", self.item_embedding, item_counts)
        if self.user_embedding is not None:
            n_users = dataset.num(self.USER_ID)
            user_counts = torch.bincount(dataset.inter_feat[self.USER_ID], minlength=n_users)
            self._register_frequencies("user", self.user_embedding, user_counts)
        self.apply(xavier_init)
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)  # the code's item_b: zero init

    def _register_frequencies(self, prefix: str, emb: FeatureTableEmbedding, counts: torch.Tensor) -> None:
        for name, freq in table_frequencies(emb, counts).items():
            self.register_buffer(f"freq_{prefix}_{name}", freq, persistent=False)

    def _history(self, interaction) -> tuple[torch.Tensor, torch.Tensor]:
        """History items [B, L] and mask [B, L] (True = real, from ``item_length``)."""
        seq = interaction[self.ITEM_SEQ]
        mask = torch.arange(seq.shape[1], device=seq.device).unsqueeze(0) < interaction[self.ITEM_SEQ_LEN].unsqueeze(1)
        return seq, mask

    def _attend(self, interaction):
        seq, mask = self._history(interaction)
        hist = self.item_embedding(seq)  # [B, L, D]
        target = self.item_embedding(interaction[self.ITEM_ID])  # [B, D]
        pooled, weights = self.attention(hist, target, mask)
        return pooled, weights, target

    def mlp_input(self, interaction) -> torch.Tensor:
        """Normalised input [B, U + 3D] (``mlp_product``; else [B, U + 2D]) of the prediction
        MLP: [user profile, u, e_a, u * e_a], u the (projected) pooled interest."""
        pooled, _, target = self._attend(interaction)
        user = self.user_embedding(interaction[self.USER_ID]) if self.user_embedding is not None else None
        return self._mlp_input(pooled, target, user)

    def _mlp_input(self, pooled: torch.Tensor, target: torch.Tensor, user: torch.Tensor | None) -> torch.Tensor:
        """``mlp_input`` from pooled history [N, D], target [N, D] and user profile [N, U]."""
        interest = self.interest(pooled)  # [N, D]
        parts = [interest, target] + ([interest * target] if self.mlp_product else [])
        if user is not None:
            parts.insert(0, user)
        return self.mlp_norm(torch.cat(parts, -1))

    def forward(self, interaction) -> torch.Tensor:
        """Logits [B] of the (history, user, target item) rows of ``interaction``."""
        logits = self.head(self.mlp(self.mlp_input(interaction))).squeeze(-1)
        if self.item_bias is not None:
            logits = logits + self.item_bias(interaction[self.ITEM_ID]).squeeze(-1)
        return logits

    def attention_weights(self, interaction) -> torch.Tensor:
        """Weights [B, L] the local activation unit gives each history item for the row's
        target item (0 at padding); not normalised unless ``attention_softmax``."""
        return self._attend(interaction)[1]

    def regularization(self, interaction) -> torch.Tensor:
        """``reg_type`` term: mba (rows read in the batch, / frequency), l2 (all rows) or none."""
        if self.reg_type == "none" or self.reg_weight == 0:
            return torch.zeros((), device=self.head.weight.device)
        groups = [("item", self.item_embedding)]
        if self.user_embedding is not None:
            groups.append(("user", self.user_embedding))
        total = torch.zeros((), device=self.head.weight.device)
        if self.reg_type == "l2":
            for _, emb in groups:
                for table in embedding_tables(emb).values():
                    total = total + table.weight.pow(2).sum()
            return self.reg_weight * total
        seq, mask = self._history(interaction)
        ids = {
            "item": torch.cat([seq[mask], interaction[self.ITEM_ID]]),
            "user": interaction[self.USER_ID] if self.user_embedding is not None else None,
        }
        for prefix, emb in groups:
            tables = embedding_tables(emb)
            for name, rows in emb.rows_in(ids[prefix]).items():
                rows = torch.unique(rows)
                rows = rows[rows != 0]  # the padding row is fixed at zero
                weight = tables[name].weight[rows]
                freq = getattr(self, f"freq_{prefix}_{name}")[rows]
                total = total + (weight.pow(2).sum(-1) / freq).sum()
        return self.reg_weight * total

    def calculate_loss(self, interaction) -> torch.Tensor:
        logits = self.forward(interaction)
        return self.loss_fct(logits, interaction[self.LABEL].float()) + self.regularization(interaction)

    def predict(self, interaction) -> torch.Tensor:
        """Click probabilities [B]."""
        return torch.sigmoid(self.forward(interaction))

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Probabilities [B, N] for every item, ``full_sort_chunk`` items at a time.

        Eval mode shares work across candidates (``TargetAttention.shared``: the history
        side of the attention's first layer once per row); equals ``predict`` pair by pair.
        Training mode (batch statistics) scores pair by pair."""
        if self.training:
            return full_sort_in_chunks(self.predict, interaction, self.ITEM_ID, self.n_items, self.full_sort_chunk)
        seq, mask = self._history(interaction)
        hist = self.item_embedding(seq)  # [B, L, D]
        user = self.user_embedding(interaction[self.USER_ID]) if self.user_embedding is not None else None
        b, device = seq.shape[0], seq.device
        scores = []
        for items in torch.arange(self.n_items, device=device).split(self.full_sort_chunk):
            c = items.numel()
            target = self.item_embedding(items)  # [C, D]
            pooled, _ = self.attention.shared(hist, target, mask)  # [B, C, D]
            rows_user = user.repeat_interleave(c, dim=0) if user is not None else None
            x = self._mlp_input(pooled.reshape(b * c, -1), target.repeat(b, 1), rows_user)  # row-major pairs
            logits = self.head(self.mlp(x)).view(b, c)
            if self.item_bias is not None:
                logits = logits + self.item_bias(items).view(1, c)
            scores.append(torch.sigmoid(logits))
        return torch.cat(scores, 1)
