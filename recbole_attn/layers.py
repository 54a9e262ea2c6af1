"""Blocks shared by two or more recbole-attn models (AttnDIN, AttnDIEN, BST, ATRank).

- ``Dice``: the data-adaptive activation of DIN (Zhou et al., KDD 2018, arXiv 1706.06978,
  eq. 9): p = sigmoid(BN(x)), out = p * x + (1 - p) * alpha * x, with a learned
  per-channel alpha, batch statistics in training and running statistics at inference.
  RecBole's ``recbole.model.layers.Dice`` keeps alpha as a constant zero tensor and has no
  normalisation, so it is x * sigmoid(x); this one is the paper's.
- ``activation_layer`` / ``MLP``: channels-last MLP taking Dice, PReLU, LeakyReLU, ...
  (RecBole's ``MLPLayers`` applies BatchNorm1d/PReLU over dim 1, wrong for [B, L, C]).
- ``TargetAttention``: DIN's local activation unit over [hist, target, hist - target,
  hist * target]; padding gets weight 0 and never enters the MLP (so it cannot move
  Dice's batch statistics either).
- ``FeatureTableEmbedding`` / ``ItemFeatureEmbedding`` / ``UserFeatureEmbedding``: an id
  -> [id embedding (+) one embedding per feature field], the feature table read once
  from the dataset and kept as buffers, so history and target items share one embedding.
- ``mlp_input_norm``: the normalisation DIN's and DIEN's reference code put on the
  prediction MLP's input (BatchNorm, or the per-channel affine their graphs compute).
- ``time_bucket``: log2 bucketing of a time gap (BST's and ATRank's time feature).

Mask convention: bool, True = real item.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recbole.utils import FeatureSource, FeatureType

from recbole_attn.errors import ConfigError
from recbole_attn.explain import capture

ACTIVATIONS = ("dice", "prelu", "leakyrelu", "relu", "sigmoid", "none")


class Dice(nn.Module):
    """Dice activation (DIN paper, eq. 9), channels last.

    p = sigmoid((x - E[x]) / sqrt(Var[x] + eps)), out = p * x + (1 - p) * alpha * x.
    E and Var are the batch statistics in training (per channel, over every row) and the
    running averages at inference (``nn.BatchNorm1d(affine=False)``). A training batch of
    a single row has no variance; it falls back to the running statistics.

    Args:
        num_features: C, the channel (last) dimension.
        eps: the paper's epsilon (1e-8).

    Shapes: input [N, C] or [..., C] -> same shape.
    """

    def __init__(self, num_features: int, eps: float = 1e-8):
        super().__init__()
        self.num_features = num_features
        self.bn = nn.BatchNorm1d(num_features, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(num_features))  # official DIN code: zero init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.num_features)
        use_batch = self.training and flat.shape[0] > 1
        normed = F.batch_norm(
            flat,
            self.bn.running_mean,
            self.bn.running_var,
            training=use_batch,
            momentum=self.bn.momentum,
            eps=self.bn.eps,
        )
        if use_batch:
            self.bn.num_batches_tracked.add_(1)
        p = torch.sigmoid(normed)
        # p x + (1 - p) alpha x, as x (alpha + (1 - alpha) p): two [N, C] ops, not five
        # (half the time of Dice's forward + backward on CPU, measured on [80000, 80]).
        out = flat * torch.addcmul(self.alpha, p, 1 - self.alpha)
        return out.reshape(shape)


class ChannelPReLU(nn.Module):
    """PReLU with one learned slope per channel of the LAST dimension (init 0.25).

    ``nn.PReLU(C)`` applies its slopes over dim 1, which is the sequence for [B, L, C].
    """

    def __init__(self, num_features: int, init: float = 0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_features,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.weight * x)


def activation_layer(name: str, num_features: int) -> nn.Module:
    """An activation by name (case-insensitive): one of ``ACTIVATIONS``.

    Raises:
        ConfigError: unknown name; the message lists the choices.
    """
    key = str(name).lower()
    if key == "dice":
        return Dice(num_features)
    if key == "prelu":
        return ChannelPReLU(num_features)
    if key == "leakyrelu":
        return nn.LeakyReLU()
    if key == "relu":
        return nn.ReLU()
    if key == "sigmoid":
        return nn.Sigmoid()
    if key == "none":
        return nn.Identity()
    raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


MLP_INPUT_NORMS = ("batch", "affine", "none")


class RowBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the rows of [N, C] or [..., C], channels last (batch statistics
    in training, running statistics at inference); a training batch of one row uses the
    running statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        if self.training and x.shape[0] < 2:
            out = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        else:
            out = super().forward(x)
        return out.view(shape)


class ChannelAffine(nn.Module):
    """x * gamma + beta per channel of the last dimension (gamma 1, beta 0 at init)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


def mlp_input_norm(kind: str, num_features: int) -> nn.Module:
    """Normalisation of a prediction MLP's input [N, C]: one of ``MLP_INPUT_NORMS``.

    DIN's (zhougr1993/DeepInterestNetwork, din/model.py) and DIEN's (mouna99/dien,
    script/model.py ``build_fcn_net``) reference code apply ``tf.layers.batch_normalization``
    to the MLP input. 'batch': BatchNorm as that layer is meant (batch statistics in
    training, running statistics at inference). 'affine': what their graphs compute, since
    the call leaves ``training=False``: the initial moving statistics (0, 1) are never
    updated, so the layer is a learned per-channel scale and shift. 'none': identity.

    Raises:
        ConfigError: an unknown kind; the message lists the choices.
    """
    key = str(kind).lower()
    if key == "batch":
        return RowBatchNorm(num_features)
    if key == "affine":
        return ChannelAffine(num_features)
    if key == "none":
        return nn.Identity()
    raise ConfigError(f"unknown mlp_input_norm {kind!r}; choose one of {', '.join(MLP_INPUT_NORMS)}")


MLP_HIDDEN_NORMS = ("none", "batch")


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> activation -> Dropout for each hidden size.

    Args:
        in_dim: input width.
        hidden: hidden sizes; empty -> identity.
        activation: a name accepted by ``activation_layer``.
        dropout: dropout probability after each activation.
        norm: one of ``MLP_HIDDEN_NORMS``: 'batch' puts a ``RowBatchNorm`` (with scale and
            shift) between each Linear and its activation, as RecBole's
            ``MLPLayers(bn=True)``; 'none': no normalisation.

    Raises:
        ConfigError: an unknown ``norm``; the message lists the choices.

    Shapes: [..., in_dim] -> [..., hidden[-1]]; ``out_dim`` is the output width.
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], activation: str = "dice", dropout: float = 0.0, norm: str = "none"
    ):
        super().__init__()
        norm = str(norm).lower()
        if norm not in MLP_HIDDEN_NORMS:
            raise ConfigError(f"unknown mlp_hidden_norm {norm!r}; choose one of {', '.join(MLP_HIDDEN_NORMS)}")
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if norm == "batch":
                layers.append(RowBatchNorm(size))
            layers += [activation_layer(activation, size), nn.Dropout(dropout)]
            width = size
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TargetAttention(nn.Module):
    """DIN's local activation unit (paper, eq. 3 and Fig. 2).

    w_j = Linear(MLP([e_j, v_A, e_j - v_A, e_j * v_A])); pooled = sum_j w_j e_j.
    ``softmax=False`` (DIN) keeps the raw weights so the pooled vector keeps the
    intensity of the user's interest; ``softmax=True`` normalises over real positions.

    Only real positions go through the MLP: padding gets weight 0 and does not enter
    Dice's batch statistics.

    Args:
        dim: D, the width of a history/target vector.
        hidden: hidden sizes of the attention MLP (DIN's code: 80, 40).
        activation: activation of the attention MLP.
        softmax: normalise the weights over the real positions.
        scale: factor on the scores before the softmax (DIN's code: 1 / sqrt(D)).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (80, 40),
        activation: str = "dice",
        softmax: bool = False,
        scale: float = 1.0,
    ):
        super().__init__()
        self.softmax = softmax
        self.scale = scale
        self.mlp = MLP(4 * dim, list(hidden), activation)
        self.out = nn.Linear(self.mlp.out_dim, 1)

    def forward(self, hist: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        """hist [B, L, D], target [B, D], mask [B, L] bool (True = real) -> (pooled [B, D], weights [B, L]).

        The first layer on [e, v, e - v, e * v] is computed as e (W1 + W3) + v (W2 - W3) +
        (e * v) W4 + b (``_split_first``): the same map without building the 4D-wide input,
        and the target's term once per row instead of once per position.
        """
        first, w_hist, w_target, w_prod = self._split_first()
        rows = mask.nonzero(as_tuple=True)[0]  # [R] the row of each real position
        real_hist, real_target = hist[mask], target[rows]  # [R, D]
        per_row = F.linear(target, w_target, first.bias)  # [B, H1]
        x = torch.addmm(per_row[rows], real_hist, w_hist.t()).addmm_(real_hist * real_target, w_prod.t())
        real_scores = self._after_first(x)  # [R]
        scores = hist.new_zeros(mask.shape).masked_scatter(mask, real_scores)
        if self.softmax:
            scores = scores.masked_fill(~mask, float("-inf")).softmax(-1)
            scores = torch.where(mask, scores, torch.zeros_like(scores))  # all-padding rows: 0, not NaN
        capture.record(self, scores)
        pooled = torch.einsum("bl,bld->bd", scores, hist)
        return pooled, scores

    def _split_first(self):
        """First layer and its weights [H1, D] on e, v and e * v: W1 + W3, W2 - W3, W4."""
        first = self.mlp.net[0] if len(self.mlp.net) else self.out
        w1, w2, w3, w4 = first.weight.chunk(4, dim=1)
        return first, w1 + w3, w2 - w3, w4

    def _after_first(self, x: torch.Tensor) -> torch.Tensor:
        """The layers after the first: [..., H1] -> scaled scores [...]."""
        if len(self.mlp.net):
            x = self.out(self.mlp.net[1:](x))
        return x.squeeze(-1) * self.scale

    def shared(self, hist: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor):
        """Every row's history against every candidate, equal to ``forward`` pair by pair in
        eval mode: hist [B, L, D], targets [C, D], mask [B, L] -> (pooled [B, C, D],
        weights [B, C, L]).

        The first layer of a history item e and candidate v is e (W1 + W3 + diag(v) W4) +
        v (W2 - W3) + b: one [D, H1] matrix and one bias per candidate, then one batched
        matmul over the real positions (no [e, v, e - v, e * v] per pair); the layers after
        it run per pair.
        """
        first, w_hist, w_target, w_prod = self._split_first()
        per_target = w_hist.t() + targets.unsqueeze(-1) * w_prod.t()  # [C, D, H1]
        bias = F.linear(targets, w_target, first.bias).unsqueeze(1)  # [C, 1, H1]
        real_hist = hist[mask]  # [R, D]
        x = torch.baddbmm(bias, real_hist.expand(targets.shape[0], -1, -1), per_target)  # [C, R, H1]
        real_scores = self._after_first(x).t()  # [R, C]
        b, length = mask.shape
        c = targets.shape[0]
        scores = hist.new_zeros(b, length, c)
        scores[mask] = real_scores
        scores = scores.transpose(1, 2)  # [B, C, L]
        keys = mask.unsqueeze(1)
        if self.softmax:
            scores = scores.masked_fill(~keys, float("-inf")).softmax(-1)
            scores = torch.where(keys, scores, torch.zeros_like(scores))
        return torch.einsum("bcl,bld->bcd", scores, hist), scores


class FeatureTableEmbedding(nn.Module):
    """An id -> [id embedding (+) one embedding per feature field of its table].

    Field types: token -> ``nn.Embedding``; token_seq -> mean of the embeddings of its
    non-padding tokens; float -> ``nn.Linear(1, E)``. The feature table is read once from
    ``dataset.get_item_feature()`` / ``get_user_feature()`` and kept as (non-persistent)
    buffers.

    Args:
        dataset: a RecBole dataset.
        embedding_size: E, the width of each part.
        fields: feature fields of the table, ``None`` = every loaded token, token_seq or
            float field of that table.
        source: ``"item"`` or ``"user"``.
        include_id: put the id embedding first.
        key: the config key that names ``fields``, for error messages (default
            ``item_fields`` / ``user_fields``).

    Raises:
        ConfigError: a field that is not a loaded feature of the table (message names it,
            lists the loaded ones and says how to load it), or of an unsupported type.

    Shapes: ids LongTensor [...] -> [..., out_dim], out_dim = E * (include_id + len(fields)).
    """

    SUPPORTED = (FeatureType.TOKEN, FeatureType.TOKEN_SEQ, FeatureType.FLOAT)

    def __init__(
        self,
        dataset,
        embedding_size: int,
        fields: Sequence[str] | None,
        source: str = "item",
        include_id: bool = True,
        key: str | None = None,
    ):
        super().__init__()
        if source not in ("item", "user"):
            raise ValueError(f"source must be 'item' or 'user', got {source!r}")
        id_field = dataset.iid_field if source == "item" else dataset.uid_field
        if id_field is None:
            raise ConfigError(f"the dataset has no {source} id field; set {source.upper()}_ID_FIELD")
        feat_source = FeatureSource.ITEM if source == "item" else FeatureSource.USER
        key = key or f"{source}_fields"
        available = [
            f for f, s in dataset.field2source.items() if s == feat_source and f != id_field
        ]
        if fields is None:
            fields = [f for f in available if dataset.field2type[f] in self.SUPPORTED]
        fields = list(fields)
        for field in fields:
            if field not in available:
                raise ConfigError(
                    f"{source} feature field '{field}' is not in dataset '{dataset.dataset_name}' "
                    f"(loaded {source} features: {', '.join(available) or 'none'}). Fix: add it to "
                    f"load_col: {{{source}: [{id_field}, {field}, ...]}} if the .{source} file has it, "
                    f"or remove it from {key}."
                )
            if dataset.field2type[field] not in self.SUPPORTED:
                raise ConfigError(
                    f"{source} feature field '{field}' has type {dataset.field2type[field].value}; "
                    f"supported: token, token_seq, float. Fix: remove it from {key}."
                )
        self.source, self.id_field, self.fields = source, id_field, fields
        self.include_id = include_id
        self.embedding_size = embedding_size
        num = dataset.num(id_field)
        table = dataset.get_item_feature() if source == "item" else dataset.get_user_feature()
        if include_id:
            self.id_embedding = nn.Embedding(num, embedding_size, padding_idx=0)
        self.embeddings = nn.ModuleDict()
        self.types: dict[str, FeatureType] = {}
        for field in fields:
            ftype = dataset.field2type[field]
            self.types[field] = ftype
            values = table[field]
            if ftype == FeatureType.FLOAT:
                self.register_buffer(f"table_{field}", values.float().reshape(num), persistent=False)
                self.embeddings[field] = nn.Linear(1, embedding_size)
            else:
                self.register_buffer(f"table_{field}", values.long(), persistent=False)
                self.embeddings[field] = nn.Embedding(dataset.num(field), embedding_size, padding_idx=0)
        self.out_dim = embedding_size * (int(include_id) + len(fields))
        if self.out_dim == 0:
            raise ConfigError(f"{source} embedding has no parts: include_id is off and no {source} fields are set")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        parts = [self.id_embedding(ids)] if self.include_id else []
        for field in self.fields:
            table = getattr(self, f"table_{field}")
            ftype = self.types[field]
            if ftype == FeatureType.TOKEN:
                parts.append(self.embeddings[field](table[ids]))
            elif ftype == FeatureType.TOKEN_SEQ and ids.numel() >= table.shape[0]:
                # pool each row of the table once, then gather: [num, E] work, not [..., S, E]
                parts.append(self._mean_pool(field, table)[ids])
            elif ftype == FeatureType.TOKEN_SEQ:
                parts.append(self._mean_pool(field, table[ids]))
            else:
                parts.append(self.embeddings[field](table[ids].unsqueeze(-1)))
        return torch.cat(parts, -1)

    def _mean_pool(self, field: str, tokens: torch.Tensor) -> torch.Tensor:
        """Mean of the embeddings of the non-padding tokens: [..., S] -> [..., E] (0 if none)."""
        real = (tokens != 0).unsqueeze(-1)  # [..., S, 1]
        summed = (self.embeddings[field](tokens) * real).sum(-2)
        return summed / real.sum(-2).clamp(min=1)

    def rows_in(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Which rows of each embedding table the ids read: name -> flat LongTensor (with repeats)."""
        rows = {"id": ids.reshape(-1)} if self.include_id else {}
        for field in self.fields:
            if self.types[field] != FeatureType.FLOAT:
                rows[field] = getattr(self, f"table_{field}")[ids].reshape(-1)
        return rows


class ItemFeatureEmbedding(FeatureTableEmbedding):
    """Item id -> [id embedding (+) one embedding per item field]; see ``FeatureTableEmbedding``.

    ``item_fields=None`` uses every loaded item feature.
    """

    def __init__(self, dataset, embedding_size: int, item_fields: Sequence[str] | None, key: str | None = None):
        super().__init__(dataset, embedding_size, item_fields, source="item", include_id=True, key=key)


class UserFeatureEmbedding(FeatureTableEmbedding):
    """User id -> [one embedding per user profile field] (user id embedding optional)."""

    def __init__(self, dataset, embedding_size: int, user_fields: Sequence[str] | None, include_id: bool = False):
        super().__init__(dataset, embedding_size, user_fields, source="user", include_id=include_id)


def user_feature_embedding(
    dataset, embedding_size: int, user_fields: Sequence[str] | None, include_id: bool = False
) -> UserFeatureEmbedding | None:
    """The user part of a model's input: ``user_fields`` None = every loaded user feature,
    [] = none; plus the user id embedding with ``include_id``. None when that is empty.

    Raises:
        ConfigError: ``include_id`` on a dataset without a user id field.
    """
    if user_fields is None:
        user_fields = None if any(s == FeatureSource.USER for s in dataset.field2source.values()) else []
    if user_fields is not None and not user_fields and not include_id:
        return None
    uid = dataset.uid_field
    if include_id and (not uid or uid not in dataset.field2type):
        raise ConfigError(
            f"a user id embedding needs a user id field, but USER_ID_FIELD={uid!r} is not in "
            "the dataset; set USER_ID_FIELD or switch the user id embedding off (use_user_id: False)"
        )
    return UserFeatureEmbedding(dataset, embedding_size, user_fields, include_id=include_id)


def xavier_init(module: nn.Module) -> None:
    """Initialisation the target-item models share (RecBole's DIN does the same): Xavier
    normal for embeddings and linear weights, zero biases, zero padding row."""
    if isinstance(module, nn.Embedding):
        nn.init.xavier_normal_(module.weight)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def time_bucket(gap: torch.Tensor, num_buckets: int, unit: float = 1.0) -> torch.LongTensor:
    """Log2 bucket of a non-negative time gap.

    0 for gap < unit; b for unit * 2^(b-1) <= gap < unit * 2^b; clipped to
    ``num_buckets - 1``; negative gaps -> 0. Monotone non-decreasing in ``gap``.
    """
    x = gap.float() / unit
    bucket = torch.floor(torch.log2(x.clamp(min=1.0))).long() + 1
    bucket = torch.where(x >= 1.0, bucket, torch.zeros_like(bucket))
    return bucket.clamp(max=num_buckets - 1)


def distinct_rows(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``key`` [B, K] with distinct values: the first row of each [U] and the row ->
    distinct index map [B] (``key[first][inverse] == key``). A labelled evaluation batch
    scores ~100 items against one history, and sampled negatives repeat their positive's
    history: the history side can run once per distinct row."""
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    order = torch.arange(len(inverse), device=inverse.device)
    first = torch.full((int(inverse.max()) + 1 if len(inverse) else 0,), len(inverse), dtype=torch.long, device=inverse.device)
    return first.scatter_reduce(0, inverse, order, reduce="amin"), inverse


def full_sort_in_chunks(predict_logits, interaction, item_field: str, n_items: int, chunk: int) -> torch.Tensor:
    """Score every item for every row of ``interaction`` by pairing the rows with chunks of items.

    ``predict_logits(pairs) -> [B * C]`` scores an Interaction of (row, item) pairs; each
    chunk repeats the B rows C = ``chunk`` times, so memory grows with B * C, and the
    result equals scoring item by item. Returns [B, n_items].
    """
    if chunk < 1:
        raise ConfigError(f"full_sort_chunk must be >= 1, got {chunk}")
    b = len(interaction)
    device = next(iter(interaction.interaction.values())).device
    out = []
    for start in range(0, n_items, chunk):
        items = torch.arange(start, min(start + chunk, n_items), device=device)
        pairs = interaction.repeat_interleave(len(items))
        pairs.update(type(interaction)({item_field: items.repeat(b)}))
        out.append(predict_logits(pairs).view(b, len(items)))
    return torch.cat(out, 1)
