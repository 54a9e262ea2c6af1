"""ATRank: heterogeneous user behaviours with multi-space self-attention.

Paper: Chang Zhou, Jinze Bai, Junshuai Song, Xiaofei Liu, Zhengchao Zhao, Xiusi Chen,
Jun Gao. "ATRank: An Attention-Based User Behavior Modeling Framework for
Recommendation", AAAI 2018, arXiv 1711.06632.

A behaviour is (action a_j, object o_j, time t_j). Behaviours are partitioned into
groups; each group has its own embedding space and its own projection into one shared
space, where self-attention over K latent semantic spaces relates the behaviours and a
vanilla attention from the target behaviour pools them into the user vector.

Data in RecBole: the action is a field of the interaction file (``behavior_field``).

- A token field (Taobao's ``behavior_type``: pv, cart, fav, buy): its tokens are the
  actions, read per history position from RecBole's ``<field>_list``.
- A float field, i.e. a rating (ml-100k has no action field): the action is derived per
  position from ``<rating>_list`` by the closed rating ranges of ``rating_actions``
  (ml-100k preset: 1-2 -> neg, 3 -> mid, 4-5 -> pos). **This derivation is our choice,
  not the paper's**; it gives a dataset without actions heterogeneous behaviours to
  model.

Deviations from the paper:

- Groups: the paper groups behaviours by object type (items, queries, coupons); RecBole
  interaction files have one object type (items), so groups are configured as sets of
  actions (``behavior_groups``, e.g. {browse: [pv], engage: [cart, fav, buy]}). Each
  group keeps its own embedding tables (item id + item features, time bucket, action)
  of its own size and its own projection, as in the paper.
- Target behaviour: the paper scores a target behaviour (object + action). The
  intended action is one configured action (``target_action``) for every row, so the
  model answers "will the user <target_action> this item"; the label comes from
  RecBole's labelled protocol (observed next item = 1, sampled item = 0), whatever the
  observed action was.
- Time buckets are log2 of the gap (target time - behaviour time) in ``time_unit``
  (default days, 12 buckets: [0, 1), [1, 2), [2, 4), ... days, the authors' Amazon
  setting), via ``recbole_attn.layers.time_bucket``. The target's own gap is 0.
- Self-attention logits are scaled by 1/sqrt(d_k) (as in the authors' code and the
  transformer); the paper's bilinear a(S_k, S) = S_k W_k S^T does not say.
- The ranking function is the authors' item ranking: logit = <u_t, h_t> + b_item
  (``ranking: dot``); ``ranking: mlp`` puts an MLP over [u_t, h_t, u_t * h_t] instead.
- Optimiser: Adam (RecBole's) with gradient-norm clipping at 5 (the authors: SGD with
  learning rate 1.0, same clipping). The L2 term on u_t and h_t (``reg_weight``) follows
  the authors' code.
- Raw values: the model needs raw timestamps (seconds) and raw ratings, so its YAML
  turns RecBole's min-max normalisation off (``normalize_all: False``); normalising the
  time or behaviour field is refused with a ConfigError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import FeatureType, InputType

from recbole_attn.errors import ConfigError
from recbole_attn.layers import MLP, ItemFeatureEmbedding, time_bucket, xavier_init

RANKINGS = ("dot", "mlp")


class BehaviorVocabulary:
    """Actions and their groups, checked against the data.

    Attributes:
        actions: action names; action index = position + 1 (0 = padding).
        groups: group names, in configuration order.
        group_of: action index -> group index, list of length len(actions) + 1 (-1 for padding).
        rating_ranges: for a derived (rating) field, the closed [low, high] range of each action.
    """

    def __init__(self, config, dataset):
        field = config["behavior_field"]
        self.field = field
        available = sorted(dataset.field2type)
        if not field or field not in dataset.field2type:
            raise ConfigError(
                f"ATRank: behavior_field={field!r} is not a field of dataset '{config['dataset']}' "
                f"(fields: {', '.join(available)}). Set behavior_field to the interaction field "
                "that holds the action (a token field such as behavior_type, loaded through "
                "load_col: {inter: [..., behavior_type]}), or to the rating field to derive "
                "actions from ratings with rating_actions."
            )
        ftype = dataset.field2type[field]
        if ftype == FeatureType.TOKEN:
            self.derived = False
            self.actions: list[str] = [str(t) for t in dataset.field2id_token[field][1:]]
            self.rating_ranges: list[tuple[float, float]] = []
        elif ftype == FeatureType.FLOAT:
            self.derived = True
            rating_actions = config["rating_actions"]
            if not isinstance(rating_actions, Mapping) or not rating_actions:
                raise ConfigError(
                    f"ATRank: behavior_field '{field}' is a float field, so actions are derived "
                    "from its values, but rating_actions is not set. Set rating_actions to "
                    "{action: [low, high], ...}, e.g. {neg: [1, 2], mid: [3, 3], pos: [4, 5]}."
                )
            self.actions = [str(a) for a in rating_actions]
            self.rating_ranges = []
            for name, bounds in rating_actions.items():
                if not isinstance(bounds, Sequence) or len(bounds) != 2 or bounds[0] > bounds[1]:
                    raise ConfigError(
                        f"ATRank: rating_actions['{name}'] must be [low, high] with low <= high, "
                        f"got {bounds!r}"
                    )
                self.rating_ranges.append((float(bounds[0]), float(bounds[1])))
            self._check_normalisation(config, field)
        else:
            raise ConfigError(
                f"ATRank: behavior_field '{field}' has type {ftype.value}; it must be a token "
                "field (the action) or a float field (a rating to derive actions from)."
            )
        self._check_normalisation(config, config["TIME_FIELD"])

        counts = self._counts(dataset, field)
        unclaimed_in_data = [a for a, c in zip(self.actions, counts) if c > 0]
        groups_cfg = self._groups_config(config)
        self.groups: list[str] = list(groups_cfg)
        self.group_of: list[int] = [-1] * (len(self.actions) + 1)
        for g, (group, members) in enumerate(groups_cfg.items()):
            if isinstance(members, str):
                members = [members]
            for action in members:
                action = str(action)
                if action not in self.actions:
                    raise ConfigError(
                        f"ATRank: behavior_groups['{group}'] names action '{action}', which "
                        f"{field} does not have (actions: {', '.join(self.actions)}). Fix the "
                        "group mapping."
                    )
                index = self.actions.index(action) + 1
                if self.group_of[index] != -1:
                    raise ConfigError(
                        f"ATRank: action '{action}' is in two groups "
                        f"('{self.groups[self.group_of[index]]}' and '{group}'); each action "
                        "belongs to exactly one group."
                    )
                self.group_of[index] = g
        for action in unclaimed_in_data:
            if self.group_of[self.actions.index(action) + 1] == -1:
                raise ConfigError(
                    f"ATRank: {field} value '{action}' occurs in the data but no group in "
                    f"behavior_groups claims it (groups: {dict(groups_cfg)}). Add '{action}' "
                    "to one of the groups (or set single_group=True)."
                )
        for g, group in enumerate(self.groups):
            members = [a for i, a in enumerate(self.actions, 1) if self.group_of[i] == g]
            if sum(counts[self.actions.index(a)] for a in members) == 0:
                present = ", ".join(f"{a}: {c}" for a, c in zip(self.actions, counts))
                raise ConfigError(
                    f"ATRank: behaviour group '{group}' ({', '.join(members)}) is left empty by "
                    f"the data: no {field} value of it occurs (counts: {present}). Remove the "
                    "group or move data-bearing actions into it (behavior_groups)."
                )

        target = config["target_action"]
        if str(target) not in self.actions:
            raise ConfigError(
                f"ATRank: target_action={target!r} is not an action of {field} "
                f"(actions: {', '.join(self.actions)}). Set target_action to one of them."
            )
        self.target_action: int = self.actions.index(str(target)) + 1

    @staticmethod
    def _check_normalisation(config, field: str) -> None:
        normalised = config["normalize_all"] or field in (config["normalize_field"] or [])
        if normalised:
            raise ConfigError(
                f"ATRank reads raw values of '{field}' (time gaps in seconds, rating ranges), "
                "but the config min-max normalises it. Set normalize_all=False and leave "
                f"'{field}' out of normalize_field."
            )

    def configured_group_of(self, action: str) -> str | None:
        """The group of ``behavior_groups`` that names ``action`` (None if none does)."""
        for group, members in (self.configured or {}).items():
            if action in ([members] if isinstance(members, str) else [str(m) for m in members]):
                return str(group)
        return None

    def _groups_config(self, config) -> dict:
        groups = config["behavior_groups"]
        self.configured = groups if isinstance(groups, Mapping) else None
        if config["single_group"]:
            return {"all": list(self.actions)}
        if not isinstance(groups, Mapping) or not groups:
            raise ConfigError(
                "ATRank: behavior_groups must map group names to lists of actions, e.g. "
                f"{{browse: [pv], engage: [cart, fav, buy]}}; got {groups!r}. Actions of "
                f"{self.field}: {', '.join(self.actions)}."
            )
        return {str(k): v for k, v in groups.items()}

    def _counts(self, dataset, field: str) -> list[int]:
        """How often each action occurs in the (training) data, targets and histories."""
        list_field = field + dataset.config["LIST_SUFFIX"]
        values = [dataset.inter_feat[field].reshape(-1)]
        if list_field in dataset.inter_feat:
            lengths = dataset.inter_feat[dataset.config["ITEM_LIST_LENGTH_FIELD"]]
            hist = dataset.inter_feat[list_field]
            mask = torch.arange(hist.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
            values.append(hist[mask])
        values = torch.cat(values)
        if not self.derived:
            counts = torch.bincount(values.long(), minlength=len(self.actions) + 1)[1:]
            return [int(c) for c in counts]
        return [
            int(((values >= lo) & (values <= hi)).sum()) for lo, hi in self.rating_ranges
        ]

    def check_ratings_covered(self, dataset, field: str) -> None:
        """Every rating value of the data falls in one of the rating_actions ranges."""
        values = dataset.inter_feat[field].reshape(-1).float()
        covered = torch.zeros_like(values, dtype=torch.bool)
        for lo, hi in self.rating_ranges:
            covered |= (values >= lo) & (values <= hi)
        if not covered.all():
            missing = sorted({float(v) for v in values[~covered].unique()[:10]})
            raise ConfigError(
                f"ATRank: {field} values {missing} fall in no range of rating_actions "
                f"({dict(zip(self.actions, self.rating_ranges))}); no group can claim them. "
                "Widen the ranges of rating_actions."
            )


class MultiSpaceSelfAttention(nn.Module):
    """Self-attention over K latent semantic spaces, then a feed-forward layer.

    S_k = ReLU(S P_k)  [B, L, d_k]           (projection of S into space k, d_k = H / K)
    A_k = softmax(S_k W_k S^T / sqrt(d_k))   [B, L, L], padding keys masked
    C_k = A_k ReLU(S Q_k)                    [B, L, d_k]
    C   = LN(S + concat_k C_k);  out = LN(C + FFN(C))   [B, L, H]

    Args:
        hidden_size: H.
        n_spaces: K (divides H).
        inner_size: width of the feed-forward layer.
        dropout: dropout on attention weights and sub-layer outputs.
    """

    def __init__(self, hidden_size: int, n_spaces: int, inner_size: int, dropout: float):
        super().__init__()
        self.n_spaces = n_spaces
        self.d_k = hidden_size // n_spaces
        self.query = nn.Linear(hidden_size, hidden_size)  # P_1..P_K stacked
        self.value = nn.Linear(hidden_size, hidden_size)  # Q_1..Q_K stacked
        self.bilinear = nn.Parameter(torch.empty(n_spaces, self.d_k, hidden_size))  # W_k
        nn.init.xavier_normal_(self.bilinear)
        self.norm1 = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, inner_size), nn.ReLU(), nn.Linear(inner_size, hidden_size)
        )
        self.norm2 = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, l, _ = x.shape
        return x.view(b, l, self.n_spaces, self.d_k).transpose(1, 2)  # [B, K, L, d_k]

    def forward(self, s: torch.Tensor, mask: torch.Tensor, need_weights: bool = False):
        """s [B, L, H], mask [B, L] (True = real) -> (out [B, L, H], A [B, K, L, L] or None).

        Without ``need_weights`` the fused ``scaled_dot_product_attention`` computes the same
        C_k without materialising A_k.
        """
        q = self._split(F.relu(self.query(s)))  # S_k: [B, K, L, d_k]
        v = self._split(F.relu(self.value(s)))  # F_{Q_k}(S)
        # S_k W_k S^T computed as S_k (S W_k^T)^T: [B, K, L, d_k] instead of [B, K, L, H]
        keys_k = torch.einsum("blh,kdh->bkld", s, self.bilinear)
        # a row without any real behaviour attends to all (its output is never read)
        keys = (mask | ~mask.any(1, keepdim=True))[:, None, None, :]  # [B, 1, 1, L]
        attn = None
        if need_weights:
            logits = q @ keys_k.transpose(-1, -2) / math.sqrt(self.d_k)  # [B, K, L, L]
            attn = logits.masked_fill(~keys, float("-inf")).softmax(-1)
            c = self.dropout(attn) @ v
        else:
            p = self.dropout.p if self.training else 0.0
            c = F.scaled_dot_product_attention(q, keys_k, v, attn_mask=keys, dropout_p=p)
        c = c.transpose(1, 2).reshape(s.shape)  # concat_k C_k: [B, L, H]
        c = self.norm1(s + self.dropout(c))
        out = self.norm2(c + self.dropout(self.ffn(c)))
        return out, attn


class ATRank(SequentialRecommender):
    r"""ATRank (Zhou et al., AAAI 2018) on RecBole's labelled protocol.

    Equations of the paper -> methods (B batch, L history length, H ``hidden_size``,
    K ``n_spaces``, G groups, d_g = ``group_embedding_size[g]`` * (1 + item fields)):

    - Raw feature spaces, per group g: u_ij = emb_g(o_j) + emb_g^t(bucket(t - t_j))
      + emb_g^a(a_j), the object embedding with its item features -> ``embed_behaviors``.
    - Behaviour embedding space: s_ij = F_{M_g}(u_ij) (a linear projection per group)
      into one space of size H; S = the projected behaviours [B, L, H] -> ``embed_behaviors``.
    - Self-attention layer: S_k = F_{P_k}(S), A_k = softmax(S_k W_k S^T),
      C_k = A_k F_{Q_k}(S), C = FFN(concat(C_1..C_K)) -> ``MultiSpaceSelfAttention``,
      ``encode_history``.
    - Vanilla attention: h_t = F_{M_g(t)}(q_t) for the target behaviour q_t (target item
      + ``target_action``, gap 0), e = softmax(h_t W_v C^T), u_t = sum_j e_j C_j
      -> ``target_vector``, ``pool``.
    - Ranking: logit = <u_t, h_t> + b_i (or an MLP), sigmoid in ``predict``,
      binary cross-entropy (+ L2 on u_t, h_t) in ``calculate_loss``.
    - Per-space attention weights of a scored pair -> ``attention_weights``.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL = config["LABEL_FIELD"]
        self.TIME = config["TIME_FIELD"]
        self.hidden_size: int = config["hidden_size"]
        self.n_spaces: int = config["n_spaces"]
        self.n_layers: int = config["n_layers"]
        self.inner_size: int = config["inner_size"]
        self.dropout_prob: float = config["dropout_prob"]
        self.time_buckets: int = config["time_buckets"]
        self.time_unit: float = float(config["time_unit"])
        self.use_time: bool = config["use_time"]
        self.ranking: str = config["ranking"]
        self.mlp_hidden_size: list[int] = list(config["mlp_hidden_size"])
        self.mlp_activation: str = config["mlp_activation"]
        self.reg_weight: float = config["reg_weight"]
        self.full_sort_chunk: int = config["full_sort_chunk"]
        item_fields = config["item_fields"]
        if self.TIME not in dataset.field2type:
            raise ConfigError(
                f"ATRank needs the time of each behaviour, but TIME_FIELD={self.TIME!r} is not "
                f"a field of dataset '{config['dataset']}'. Set TIME_FIELD and load it (load_col)."
            )
        if self.hidden_size % self.n_spaces:
            raise ConfigError(
                f"ATRank: n_spaces ({self.n_spaces}) must divide hidden_size ({self.hidden_size})"
            )
        if self.ranking not in RANKINGS:
            raise ConfigError(f"ATRank: ranking must be one of {', '.join(RANKINGS)}, got {self.ranking!r}")
        if self.time_buckets < 1 or self.time_unit <= 0:
            raise ConfigError("ATRank: time_buckets must be >= 1 and time_unit > 0")

        self.vocab = BehaviorVocabulary(config, dataset)
        self.BEHAVIOR = self.vocab.field
        self.BEHAVIOR_LIST = self.BEHAVIOR + config["LIST_SUFFIX"]
        self.TIME_LIST = self.TIME + config["LIST_SUFFIX"]
        if self.vocab.derived:
            self.vocab.check_ratings_covered(dataset, self.BEHAVIOR)
        self.n_groups = len(self.vocab.groups)
        self.group_sizes = self._group_sizes(config["group_embedding_size"])
        n_actions = len(self.vocab.actions) + 1
        self.register_buffer("group_of", torch.tensor(self.vocab.group_of), persistent=False)
        lo, hi = zip(*self.vocab.rating_ranges) if self.vocab.derived else ((), ())
        self.register_buffer("rating_low", torch.tensor(lo, dtype=torch.float), persistent=False)
        self.register_buffer("rating_high", torch.tensor(hi, dtype=torch.float), persistent=False)
        self.target_action = self.vocab.target_action
        self.target_group = self.vocab.group_of[self.target_action]

        self.object_embedding = nn.ModuleList()
        self.time_embedding = nn.ModuleList()
        self.action_embedding = nn.ModuleList()
        self.projection = nn.ModuleList()
        for size in self.group_sizes:
            obj = ItemFeatureEmbedding(dataset, size, item_fields)
            self.object_embedding.append(obj)
            self.time_embedding.append(nn.Embedding(self.time_buckets, obj.out_dim))
            self.action_embedding.append(nn.Embedding(n_actions, obj.out_dim, padding_idx=0))
            self.projection.append(nn.Linear(obj.out_dim, self.hidden_size))
        self.blocks = nn.ModuleList(
            MultiSpaceSelfAttention(self.hidden_size, self.n_spaces, self.inner_size, self.dropout_prob)
            for _ in range(self.n_layers)
        )
        self.vanilla = nn.Linear(self.hidden_size, self.hidden_size, bias=False)  # W_v
        self.item_bias = nn.Embedding(self.n_items, 1)
        if self.ranking == "mlp":
            self.rank_mlp = MLP(3 * self.hidden_size, self.mlp_hidden_size, self.mlp_activation, self.dropout_prob)
            self.rank_out = nn.Linear(self.rank_mlp.out_dim, 1)
        self.loss_fct = nn.BCEWithLogitsLoss()
        self.apply(self._init_weights)

    def _group_sizes(self, sizes) -> list[int]:
        """E_g per group from ``group_embedding_size``: a dict group -> size (or an int / a list).

        With ``single_group`` the one group 'all' takes sizes['all'] if given, else the size
        of the configured group that holds ``target_action``.
        """
        groups = self.vocab.groups
        if isinstance(sizes, int) and not isinstance(sizes, bool):
            return [sizes] * len(groups)
        if isinstance(sizes, Mapping):
            sizes = {str(k): v for k, v in sizes.items()}
            if groups == ["all"] and "all" not in sizes:
                home = self.vocab.configured_group_of(self.vocab.actions[self.vocab.target_action - 1])
                if home in sizes:
                    return [int(sizes[home])]
            missing = [g for g in groups if g not in sizes]
            if not missing:
                return [int(sizes[g]) for g in groups]
            raise ConfigError(
                f"ATRank: group_embedding_size has no size for group(s) {', '.join(missing)} "
                f"(groups: {', '.join(groups)}; given: {sizes}). Give every group a size, e.g. "
                f"{{{', '.join(f'{g}: 64' for g in groups)}}}."
            )
        if isinstance(sizes, Sequence) and not isinstance(sizes, str) and len(sizes) == len(groups):
            return [int(x) for x in sizes]
        raise ConfigError(
            f"ATRank: group_embedding_size must be a dict group -> size (or an int for all "
            f"groups, or a list with one size per group) for groups {', '.join(groups)}; got {sizes!r}"
        )

    def _init_weights(self, module: nn.Module) -> None:
        xavier_init(module)
        if module is getattr(self, "item_bias", None):
            nn.init.zeros_(module.weight)

    # ---- behaviours -------------------------------------------------------------------
    def actions_of(self, values: torch.Tensor) -> torch.Tensor:
        """Action index (0 = none) of behaviour-field values: token ids or ratings [...] -> [...]."""
        if not self.vocab.derived:
            return values.long()
        v = values.float().unsqueeze(-1)
        inside = (v >= self.rating_low) & (v <= self.rating_high)  # [..., A]
        return torch.where(inside.any(-1), inside.float().argmax(-1) + 1, torch.zeros_like(values, dtype=torch.long))

    def bucket(self, target_time: torch.Tensor, behavior_time: torch.Tensor) -> torch.Tensor:
        """Time bucket of each behaviour: target_time [B], behavior_time [B, L] -> [B, L]."""
        return time_bucket(target_time.unsqueeze(-1) - behavior_time, self.time_buckets, self.time_unit)

    def _embed_group(self, g: int, items: torch.Tensor, actions: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        u = self.object_embedding[g](items) + self.action_embedding[g](actions)
        if self.use_time:
            u = u + self.time_embedding[g](buckets)
        return self.projection[g](u)

    def embed_behaviors(self, items, actions, buckets, mask) -> torch.Tensor:
        """S: items, actions, buckets, mask [B, L] -> [B, L, H].

        Each real behaviour goes through its own group's tables and projection; padding is 0.
        """
        groups = torch.where(mask, self.group_of[actions], torch.full_like(actions, -1))
        s = items.new_zeros(items.shape + (self.hidden_size,), dtype=torch.float)
        for g in range(self.n_groups):
            where = (groups == g).nonzero(as_tuple=True)
            s = s.index_put(where, self._embed_group(g, items[where], actions[where], buckets[where]))
        return s

    def history(self, interaction):
        """Items, actions, time buckets and mask of the history: each [B, L]."""
        items = interaction[self.ITEM_SEQ]
        lengths = interaction[self.ITEM_SEQ_LEN]
        mask = torch.arange(items.shape[1], device=items.device).unsqueeze(0) < lengths.unsqueeze(1)
        actions = self.actions_of(interaction[self.BEHAVIOR_LIST])
        buckets = self.bucket(interaction[self.TIME], interaction[self.TIME_LIST])
        return items, actions, buckets, mask

    def encode_history(self, interaction, need_weights: bool = False):
        """C [B, L, H], mask [B, L] and per-space self-attention A [n_layers][B, K, L, L] (or Nones)."""
        items, actions, buckets, mask = self.history(interaction)
        c = self.embed_behaviors(items, actions, buckets, mask)
        attns = []
        for block in self.blocks:
            c, attn = block(c, mask, need_weights)
            attns.append(attn)
        return c, mask, attns

    def target_vector(self, items: torch.Tensor) -> torch.Tensor:
        """h_t of target behaviours (item, target_action, gap 0): items [...] -> [..., H]."""
        actions = torch.full_like(items, self.target_action)
        return self._embed_group(self.target_group, items, actions, torch.zeros_like(items))

    def pool(self, h: torch.Tensor, c: torch.Tensor, mask: torch.Tensor):
        """Vanilla attention: h [B, N, H], c [B, L, H], mask [B, L] -> (u [B, N, H], e [B, N, L])."""
        logits = self.vanilla(h) @ c.transpose(1, 2) / math.sqrt(self.hidden_size)
        keys = mask.unsqueeze(1)
        e = logits.masked_fill(~keys, float("-inf")).softmax(-1)
        e = torch.where(keys, e, torch.zeros_like(e))
        return e @ c, e

    def rank(self, u: torch.Tensor, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logit of (u_t, h_t, item): [..., H], [..., H], [...] -> [...]."""
        if self.ranking == "dot":
            score = (u * h).sum(-1)
        else:
            score = self.rank_out(self.rank_mlp(torch.cat([u, h, u * h], -1))).squeeze(-1)
        return score + self.item_bias(items).squeeze(-1)

    # ---- RecBole API ------------------------------------------------------------------
    def _forward(self, interaction, need_weights: bool = False):
        c, mask, attns = self.encode_history(interaction, need_weights)
        items = interaction[self.ITEM_ID]
        h = self.target_vector(items).unsqueeze(1)  # [B, 1, H]
        u, e = self.pool(h, c, mask)
        return self.rank(u, h, items.unsqueeze(1)).squeeze(1), u.squeeze(1), h.squeeze(1), attns, e.squeeze(1)

    def forward(self, interaction) -> torch.Tensor:
        """Logits of the rows' (history, target item) pairs: [B]."""
        return self._forward(interaction)[0]

    def calculate_loss(self, interaction) -> torch.Tensor:
        logits, u, h, _, _ = self._forward(interaction)
        loss = self.loss_fct(logits, interaction[self.LABEL].float())
        if self.reg_weight:
            loss = loss + self.reg_weight * 0.5 * (u.pow(2).sum() + h.pow(2).sum())
        return loss

    def predict(self, interaction) -> torch.Tensor:
        """Click probability of each row: [B]."""
        return torch.sigmoid(self.forward(interaction))

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Probability of ``target_action`` for every item, item chunks of ``full_sort_chunk``: [B, N].

        The history is encoded once per row; equals ``predict`` item by item.
        """
        c, mask, _ = self.encode_history(interaction)
        all_items = torch.arange(self.n_items, device=c.device)
        scores = []
        for chunk in all_items.split(self.full_sort_chunk):
            h = self.target_vector(chunk).unsqueeze(0).expand(c.shape[0], -1, -1)  # [B, n, H]
            u, _ = self.pool(h, c, mask)
            scores.append(torch.sigmoid(self.rank(u, h, chunk.unsqueeze(0))))
        return torch.cat(scores, 1)

    @torch.no_grad()
    def attention_weights(self, interaction) -> dict[str, torch.Tensor]:
        """Attention of the scored (history, target item) pairs.

        Returns:
            ``self``: per-space self-attention of the last block A_k [B, K, L, L] (padding
            keys get 0; rows of padded queries are never read, mask them out);
            ``layers``: the same for every block; ``target``: the vanilla attention of the
            target behaviour over the history [B, L] (padding 0); ``mask`` [B, L].
        """
        _, _, _, attns, e = self._forward(interaction, need_weights=True)
        mask = torch.arange(e.shape[1], device=e.device).unsqueeze(0) < interaction[self.ITEM_SEQ_LEN].unsqueeze(1)
        return {"self": attns[-1], "layers": attns, "target": e, "mask": mask}
