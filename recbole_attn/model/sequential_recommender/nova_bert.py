"""NOVA-BERT: BERT4Rec's cloze training with non-invasive side-information fusion.

Papers:

- Fei Sun, Jun Liu, Jian Wu, Changhua Pei, Xiao Lin, Wenwu Ou, Peng Jiang. "BERT4Rec:
  Sequential Recommendation with Bidirectional Encoder Representations from
  Transformer", CIKM 2019, arXiv 1904.06690.
- Chang Liu, Xiaoguang Li, Guohao Cai, Zhenhua Dong, Hong Zhu, Lifeng Shang.
  "Noninvasive Self-attention for Side Information Fusion in Sequential
  Recommendation", AAAI 2021, arXiv 2103.03578.

Deviations from the papers:

- Training samples (``train_samples``): by default (``prefix``) RecBole's sequential
  pipeline gives one sample per prefix of a user's training sequence, ``item_id_list``
  [B, L] plus the next item ``item_id``, the training data of RecBole's own baselines,
  so short prefixes weigh more than in BERT4Rec. ``window`` keeps BERT4Rec's samples
  instead: windows of L items sliding by ``int(sliding_window * L)`` from the end of
  each user's training sequence, plus the first L items (its code's construction, see
  ``recbole_attn/data/windows.py``); its code also copies each window 10 times with
  fresh masks, where here every epoch draws fresh masks. The model appends the next
  item after the history (position ``item_length``), so every item, the last included,
  can be a cloze target. When the history already fills ``MAX_ITEM_LIST_LENGTH`` = L the
  row is shifted left by one to make room: the oldest item of that sample is dropped
  (the L most recent items are kept). At inference a history of L items likewise drops
  its oldest item to make room for the mask token (as BERT4Rec, whose maximum length
  includes the mask).
- Masking: every real item is masked independently with probability ``mask_ratio``; a
  sample that draws no mask gets exactly one (a uniformly chosen real item), so every
  sample has a target. Masked items are always replaced by the mask token (no BERT-style
  80/10/10 random/keep replacement; BERT4Rec describes replacement by [mask] only).
  BERT4Rec adds samples that mask only the last item, to match the inference task; the
  paper does not give their share (its code adds one per window next to 10 cloze
  copies, about 0.09); ``mask_last_ratio`` of the samples of a batch do that, default
  0.5 as RecBole's ``ft_ratio``. Masking is drawn on the model's
  device with torch's global generator, fresh every batch.
- Side information of a masked item is hidden: the mask token has no item features, and
  behaviour values (rating, timestamp, ...) at masked positions and at the inference
  mask are replaced by an "unknown" value. Otherwise the model could read the answer's
  genre or rating. How the NOVA paper treats masked positions was not checked (its PDF
  was not at hand in this session). Position is always shown.
- Behaviour floats are bucketised by the quantiles of their training values
  (``behavior_float_encoding: bucket``, ``num_buckets``) or embedded linearly
  (``linear``); the NOVA paper names the features (e.g. rating, time) but not their
  encoding. Linear encodings (behaviour floats with ``linear``, item floats) read the
  value standardised by the mean and standard deviation of its training values (item
  floats: over all items), so raw timestamps do not saturate the fusion. Item
  ``token_seq`` fields are mean-pooled over their non-padding tokens.
- Fusion: each NOVA layer has its own fusion function (its own concat/gating weights);
  the paper gives one function F without saying whether its weights are shared across
  layers. ``gating`` is the paper's F_gating(f_1..f_m) = sum_i G_i f_i, G = sigma(F W^F)
  with F the [m, h] stack of the features, W^F in R^{h x 1} and sigma the softmax (the
  paper's symbol in its attention formula), so the weights are a softmax over the
  features (checked against a section-by-section summary of the paper; the PDF was not
  reachable here). Our linear layer adds a bias to F W^F, which cancels in the softmax.
- NOVA mode: the item-id stream gets BERT's embedding LayerNorm and dropout; side
  embeddings enter the fusion as they are (no LayerNorm).
- Training schedule: RecBole's trainer (Adam, constant learning rate, early stopping on
  the validation metric); the BERT4Rec paper uses lr 1e-4 with linear decay, batch 256,
  L2 0.01 and a fixed step budget. See properties/model/NOVABERT.yaml.
- Weights are initialised from a normal with std ``initializer_range`` truncated at two
  standard deviations, as ``tf.truncated_normal`` in BERT4Rec's code.
- The padding item 0 is part of the output softmax (RecBole's convention; it is never a
  label, and RecBole's full-ranking evaluation masks its score).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import FeatureType, InputType

from recbole_attn.errors import ConfigError

FUSION_TYPES = ("add", "concat", "gating")
ATTENTION_TYPES = ("nova", "invasive")
FLOAT_ENCODINGS = ("bucket", "linear")
ITEM_FIELD_TYPES = {
    FeatureType.TOKEN: "token",
    FeatureType.TOKEN_SEQ: "token_seq",
    FeatureType.FLOAT: "float",
}
BEHAVIOR_FIELD_TYPES = {FeatureType.TOKEN: "token", FeatureType.FLOAT: "float"}


def append_at_end(seq: torch.Tensor, length: torch.Tensor, value: torch.Tensor):
    """Write ``value`` right after each row's last real element, shifting full rows left.

    Args:
        seq: [B, L] left-aligned rows, zero padded.
        length: [B] number of real elements per row (0..L).
        value: [B] element to append (same dtype as ``seq`` after casting).

    Returns:
        ([B, L] rows with ``value`` at index ``min(length, L-1)``, [B] new lengths
        ``min(length + 1, L)``). A row with ``length == L`` loses its first (oldest)
        element; every other element is kept.
    """
    batch, max_len = seq.shape
    full = torch.cat([seq, seq.new_zeros(batch, 1)], dim=1)  # [B, L+1]
    full = full.scatter(1, length.unsqueeze(1), value.to(seq.dtype).unsqueeze(1))
    shift = (length >= max_len).long().unsqueeze(1)  # [B, 1]
    index = torch.arange(max_len, device=seq.device).unsqueeze(0) + shift  # [B, L]
    return full.gather(1, index), torch.clamp(length + 1, max=max_len)


def cloze_mask(
    length: torch.Tensor, max_len: int, mask_ratio: float, mask_last_ratio: float
) -> torch.Tensor:
    """Positions to mask for the cloze task, drawn on ``length``'s device.

    Each real position (index < length) is masked with probability ``mask_ratio``; a row
    that draws none gets its real position with the smallest draw (so every row with a
    real item has at least one mask, uniformly placed). A share ``mask_last_ratio`` of
    the rows masks only its last real item instead. Padding is never masked.

    Args:
        length: [B] real items per row (>= 1).
        max_len: L.

    Returns:
        [B, L] bool, True = masked.
    """
    device = length.device
    positions = torch.arange(max_len, device=device).unsqueeze(0)  # [1, L]
    real = positions < length.unsqueeze(1)  # [B, L]
    draw = torch.rand(length.shape[0], max_len, device=device).masked_fill(~real, 2.0)
    random_mask = (draw < mask_ratio) | (positions == draw.argmin(dim=1, keepdim=True))
    last_only = torch.rand(length.shape[0], 1, device=device) < mask_last_ratio  # [B, 1]
    last = positions == (length - 1).unsqueeze(1)
    return torch.where(last_only, last, random_mask) & real


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
        attn = F.scaled_dot_product_attention(
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


class NOVABERT(SequentialRecommender):
    r"""NOVA-BERT (Liu et al.) on BERT4Rec (Sun et al.): bidirectional transformer, cloze task.

    Equations of the papers -> methods:

    - BERT4Rec embedding layer h^0_i = v_i + p_i (item plus learned position embedding)
      -> ``forward`` with ``attention_type: invasive``, ``fusion_type: add`` and no side
      fields (AttnBERT4Rec).
    - NOVA's invasive baseline: R^0 = F(E_id, S_1, ..., S_m), all side information fused
      into the input once, then standard layers -> ``forward`` (``invasive``).
    - Side information S: item-related (fields of the .item file, by item id) and
      behaviour-related (position, interaction fields) -> ``_side_embeddings``.
    - NOVA layer: NOVA(R, S) = softmax(Q K^T / sqrt(d)) V with Q = F(R, S) W_Q,
      K = F(R, S) W_K, V = R W_V; S is given to every layer and never propagated, the
      layer's output is the next layer's R -> ``NOVALayer.forward`` (``nova``).
    - Fusion functions F: add, concat (+ linear), gating -> ``Fusion``.
    - Multi-head attention, position-wise feed-forward with GELU, residual, dropout and
      LayerNorm (BERT4Rec's transformer layer) -> ``NOVALayer.forward``.
    - Output layer P(v) = softmax(GELU(h W^P + b^P) E^T + b^O) with the shared item
      embedding E -> ``forward`` (projection head) and ``logits``.
    - Cloze loss: negative log-likelihood of the masked items -> ``calculate_loss``,
      masks from ``cloze_mask``.
    - Inference: append [mask] after the most recent items and rank all items by the
      output at the mask -> ``_inference_state``, ``predict``, ``full_sort_predict``.

    Tensor shapes: B batch, L ``MAX_ITEM_LIST_LENGTH``, H ``hidden_size``, N items
    (``n_items``, padding id 0 included); the mask token is item id N.
    """

    input_type = InputType.POINTWISE
    trains_on_windows = True  # ``train_samples: window`` applies (recbole_attn/data/windows.py)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.n_layers: int = config["n_layers"]
        self.n_heads: int = config["n_heads"]
        self.hidden_size: int = config["hidden_size"]
        self.inner_size: int = config["inner_size"]
        self.hidden_dropout_prob: float = config["hidden_dropout_prob"]
        self.attn_dropout_prob: float = config["attn_dropout_prob"]
        self.layer_norm_eps: float = config["layer_norm_eps"]
        self.initializer_range: float = config["initializer_range"]
        self.mask_ratio: float = config["mask_ratio"]
        self.mask_last_ratio: float = config["mask_last_ratio"]
        self.loss_type: str = config["loss_type"]
        self.list_suffix: str = config["LIST_SUFFIX"]
        side = self._side_options(config)
        self.attention_type: str = side["attention_type"]
        self.fusion_type: str = side["fusion_type"]
        self.use_position: bool = side["use_position"]
        self.float_encoding: str = side["behavior_float_encoding"]
        self.num_buckets: int = side["num_buckets"]
        self._check_options()

        h = self.hidden_size
        self.mask_token = self.n_items
        self.item_embedding = nn.Embedding(self.n_items + 1, h, padding_idx=0)
        self.position_embedding = (
            nn.Embedding(self.max_seq_length, h) if self.use_position else None
        )
        self.item_fields = self._item_fields(dataset, side["item_side_fields"])  # name -> kind
        self.behavior_fields = self._behavior_fields(dataset, side["behavior_side_fields"])
        self.item_side = nn.ModuleDict()
        for field, kind in self.item_fields.items():
            self._register_item_table(dataset, field, kind)
            if kind == "float":
                self.item_side[field] = nn.Linear(1, h)
            else:
                self.item_side[field] = nn.Embedding(dataset.num(field), h, padding_idx=0)
        self.behavior_side = nn.ModuleDict()
        for field, kind in self.behavior_fields.items():
            if kind == "token":
                self.behavior_side[field] = nn.Embedding(dataset.num(field), h, padding_idx=0)
            elif self.float_encoding == "bucket":
                bounds = self._bucket_boundaries(dataset.inter_feat[field].float())
                self.register_buffer(f"bounds_{field}", bounds, persistent=False)
                self.behavior_side[field] = nn.Embedding(len(bounds) + 2, h, padding_idx=0)
            else:
                values = dataset.inter_feat[field].float()
                self.register_buffer(f"scale_{field}", self._standardiser(values), persistent=False)
                self.behavior_side[field] = nn.Linear(1, h)
        n_sides = int(self.use_position) + len(self.item_fields) + len(self.behavior_fields)

        nova = self.attention_type == "nova"
        self.input_fusion = None if nova else Fusion(self.fusion_type, h, n_sides)
        self.input_norm = nn.LayerNorm(h, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)
        self.layers = nn.ModuleList(
            NOVALayer(
                h,
                self.n_heads,
                self.inner_size,
                self.hidden_dropout_prob,
                self.attn_dropout_prob,
                self.layer_norm_eps,
                Fusion(self.fusion_type, h, n_sides) if nova else None,
            )
            for _ in range(self.n_layers)
        )
        self.head = nn.Linear(h, h)  # W^P, b^P
        self.head_norm = nn.LayerNorm(h, eps=self.layer_norm_eps)
        self.output_bias = nn.Parameter(torch.zeros(self.n_items))  # b^O
        self.register_buffer("positions", torch.arange(self.max_seq_length), persistent=False)
        self.apply(self._init_weights)

    # ------------------------------------------------------------------ configuration

    def _side_options(self, config) -> dict:
        """The side-information settings (AttnBERT4Rec fixes them)."""
        return {
            "item_side_fields": list(config["item_side_fields"] or []),
            "behavior_side_fields": list(config["behavior_side_fields"] or []),
            "use_position": bool(config["use_position"]),
            "behavior_float_encoding": config["behavior_float_encoding"],
            "num_buckets": config["num_buckets"],
            "fusion_type": config["fusion_type"],
            "attention_type": config["attention_type"],
        }

    def _check_options(self) -> None:
        name = type(self).__name__
        choices = (
            ("fusion_type", self.fusion_type, FUSION_TYPES),
            ("attention_type", self.attention_type, ATTENTION_TYPES),
            ("behavior_float_encoding", self.float_encoding, FLOAT_ENCODINGS),
            ("loss_type", self.loss_type, ("CE",)),
        )
        for key, value, allowed in choices:
            if value not in allowed:
                raise ConfigError(
                    f"{name}: {key} must be one of {', '.join(allowed)}, got {value!r}"
                )
        if self.hidden_size % self.n_heads:
            raise ConfigError(
                f"{name}: hidden_size ({self.hidden_size}) must be a multiple of "
                f"n_heads ({self.n_heads})"
            )
        if not 0.0 < self.mask_ratio <= 1.0:
            raise ConfigError(f"{name}: mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if not 0.0 <= self.mask_last_ratio <= 1.0:
            raise ConfigError(
                f"{name}: mask_last_ratio must be in [0, 1], got {self.mask_last_ratio}"
            )
        if self.float_encoding == "bucket" and self.num_buckets < 1:
            raise ConfigError(f"{name}: num_buckets must be >= 1, got {self.num_buckets}")

    def _item_fields(self, dataset, fields: list[str]) -> dict[str, str]:
        """Validated item side fields: name -> 'token' | 'token_seq' | 'float'."""
        item_feat = dataset.item_feat
        available = [] if item_feat is None else [f for f in item_feat.columns if f != self.ITEM_ID]
        out = {}
        for field in fields:
            if field not in available:
                loaded = ", ".join(available) if available else "none (no .item columns loaded)"
                raise ConfigError(
                    f"item_side_fields: field '{field}' is not an item feature of dataset "
                    f"'{dataset.dataset_name}'. Available item fields: {loaded}. Load it with "
                    f"load_col: {{item: [{self.ITEM_ID}, {field}, ...]}} if the .item file has it, "
                    "or remove it from item_side_fields."
                )
            ftype = dataset.field2type[field]
            if ftype not in ITEM_FIELD_TYPES:
                raise ConfigError(
                    f"item_side_fields: field '{field}' has type {ftype.value}, which "
                    f"{type(self).__name__} cannot embed (supported: "
                    f"{', '.join(ITEM_FIELD_TYPES.values())}). Available item fields: "
                    f"{', '.join(available)}."
                )
            out[field] = ITEM_FIELD_TYPES[ftype]
        return out

    def _behavior_fields(self, dataset, fields: list[str]) -> dict[str, str]:
        """Validated behaviour side fields (interaction fields with a ``_list``): name -> kind."""
        excluded = {self.ITEM_ID, self.USER_ID}
        available = [
            f
            for f in dataset.field2type
            if f + self.list_suffix in dataset.field2type and f not in excluded
        ]
        out = {}
        for field in fields:
            if field not in available:
                raise ConfigError(
                    f"behavior_side_fields: field '{field}' is not an interaction field with a "
                    f"'{self.list_suffix}' sequence in dataset '{dataset.dataset_name}'. Available "
                    f"behaviour fields: {', '.join(available) or 'none'}. (Item fields go in "
                    "item_side_fields; position is use_position; load interaction columns with "
                    "load_col: {inter: [...]}.)"
                )
            ftype = dataset.field2type[field]
            if ftype not in BEHAVIOR_FIELD_TYPES:
                raise ConfigError(
                    f"behavior_side_fields: field '{field}' has type {ftype.value}, which "
                    f"{type(self).__name__} cannot embed (supported: "
                    f"{', '.join(BEHAVIOR_FIELD_TYPES.values())}). Available behaviour fields: "
                    f"{', '.join(available)}."
                )
            out[field] = BEHAVIOR_FIELD_TYPES[ftype]
        return out

    def _register_item_table(self, dataset, field: str, kind: str) -> None:
        """Buffer ``item_<field>``: the field's value per item id, [N+1] or [N+1, S].

        Row 0 (padding) and row N (mask token) carry no information: token id 0, or an
        ``item_known_<field>`` flag False for floats.
        """
        values = dataset.get_item_feature()[field]
        if values.shape[0] != self.n_items:
            raise ConfigError(
                f"item_side_fields: field '{field}' has {values.shape[0]} rows, expected one per "
                f"item ({self.n_items})"
            )
        pad = values.new_zeros((1,) + tuple(values.shape[1:]))
        table = torch.cat([values, pad], dim=0)
        if kind == "float":
            known = torch.ones(self.n_items + 1, dtype=torch.bool)
            known[0] = known[self.mask_token] = False
            self.register_buffer(f"item_known_{field}", known, persistent=False)
            table = table.float()
            mean, std = self._standardiser(table[known])
            table = torch.where(known, (table - mean) / std, torch.zeros_like(table))
        else:
            table = table.long()
            table[0] = 0
        self.register_buffer(f"item_{field}", table, persistent=False)

    @staticmethod
    def _standardiser(values: torch.Tensor) -> torch.Tensor:
        """[mean, std] of ``values`` (std 1 where it is 0 or undefined): [2]."""
        if values.numel() == 0:
            return torch.tensor([0.0, 1.0])
        mean = values.double().mean()
        std = values.double().std() if values.numel() > 1 else torch.tensor(0.0)
        std = std if torch.isfinite(std) and std > 0 else torch.tensor(1.0)
        return torch.stack([mean, std.double()]).float()

    def _bucket_boundaries(self, values: torch.Tensor) -> torch.Tensor:
        """Distinct quantile boundaries, at most ``num_buckets`` buckets: [<= num_buckets-1]."""
        if self.num_buckets == 1 or values.numel() == 0:
            return values.new_zeros(0)
        q = torch.linspace(0, 1, self.num_buckets + 1, dtype=torch.float64)[1:-1]
        sample = values.double()
        if sample.numel() > 1_000_000:  # torch.quantile's input limit is 16M; a sample suffices
            sample = sample[torch.randperm(sample.numel())[:1_000_000]]
        return torch.unique(torch.quantile(sample, q)).float()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ model

    def _side_embeddings(
        self, item_seq: torch.Tensor, behavior: dict[str, torch.Tensor], visible: torch.Tensor
    ) -> list[torch.Tensor]:
        """Side embeddings, position first, then item fields, then behaviour fields.

        Args:
            item_seq: [B, L] item ids, mask token N, padding 0.
            behavior: field -> [B, L] values of each behaviour field.
            visible: [B, L] bool, True = real, unmasked item whose behaviour values are shown.

        Returns:
            m x [B, L, H].
        """
        sides = []
        if self.position_embedding is not None:
            pos = self.position_embedding(self.positions[: item_seq.shape[1]])  # [L, H]
            sides.append(pos.unsqueeze(0).expand(item_seq.shape[0], -1, -1))
        for field, kind in self.item_fields.items():
            table = getattr(self, f"item_{field}")
            emb = self.item_side[field]
            if kind == "token":
                per_item = emb(table)  # [N+1, H]
            elif kind == "token_seq":
                tokens = table  # [N+1, S]
                weight = (tokens > 0).unsqueeze(-1).to(emb.weight.dtype)  # [N+1, S, 1]
                per_item = (emb(tokens) * weight).sum(1) / weight.sum(1).clamp(min=1.0)
            else:
                known = getattr(self, f"item_known_{field}").unsqueeze(-1)  # [N+1, 1]
                per_item = emb(table.unsqueeze(-1)) * known
            sides.append(F.embedding(item_seq, per_item))  # [B, L, H]
        for field, kind in self.behavior_fields.items():
            values, emb = behavior[field], self.behavior_side[field]
            if kind == "token":
                sides.append(emb(values.long().masked_fill(~visible, 0)))
            elif self.float_encoding == "bucket":
                bounds = getattr(self, f"bounds_{field}")
                bucket = torch.bucketize(values.float(), bounds, right=True) + 1  # 0 = unknown
                sides.append(emb(bucket.masked_fill(~visible, 0)))
            else:
                mean, std = getattr(self, f"scale_{field}")
                scaled = ((values.float() - mean) / std).unsqueeze(-1)  # [B, L, 1]
                sides.append(emb(scaled) * visible.unsqueeze(-1))
        return sides

    def forward(
        self, item_seq: torch.Tensor, behavior: dict[str, torch.Tensor], visible: torch.Tensor
    ) -> torch.Tensor:
        """Encoder plus projection head GELU(h W^P + b^P) (LayerNorm'd) at every position.

        Args:
            item_seq: [B, L] item ids with mask tokens (id N), padding 0.
            behavior: field -> [B, L] behaviour values aligned with ``item_seq``.
            visible: [B, L] bool, True = real, unmasked item.

        Returns:
            [B, L, H]; ``logits`` turns rows of it into item scores.
        """
        sides = self._side_embeddings(item_seq, behavior, visible)
        h = self.item_embedding(item_seq)  # [B, L, H]
        if self.input_fusion is not None:  # invasive: fuse everything once
            h = self.input_fusion(h, sides)
            sides = []
        h = self.dropout(self.input_norm(h))
        key_mask = item_seq > 0  # real items and mask tokens
        for layer in self.layers:
            h = layer(h, sides, key_mask)
        return self.head_norm(F.gelu(self.head(h)))

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """Scores of all items through the shared item embedding: [..., H] -> [..., N]."""
        return out @ self.item_embedding.weight[: self.n_items].T + self.output_bias

    # ------------------------------------------------------------------ training / inference

    def _behavior_lists(self, interaction) -> dict[str, torch.Tensor]:
        return {f: interaction[f + self.list_suffix] for f in self.behavior_fields}

    def calculate_loss(self, interaction) -> torch.Tensor:
        """Cross-entropy over all items at the masked positions of the training sequences."""
        seq, length = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        items, new_len = append_at_end(seq, length, interaction[self.ITEM_ID])  # [B, L]
        behavior = {
            f: append_at_end(values, length, interaction[f])[0]
            for f, values in self._behavior_lists(interaction).items()
        }
        masked = cloze_mask(new_len, items.shape[1], self.mask_ratio, self.mask_last_ratio)
        real = self.positions[: items.shape[1]].unsqueeze(0) < new_len.unsqueeze(1)
        out = self.forward(items.masked_fill(masked, self.mask_token), behavior, real & ~masked)
        return F.cross_entropy(self.logits(out[masked]), items[masked])

    def _inference_state(self, interaction) -> torch.Tensor:
        """Output at a mask token appended after the most recent items: [B, H].

        A history of length L drops its oldest item to make room, so the L-1 most recent
        items are always read.
        """
        seq, length = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        mask = torch.full_like(length, self.mask_token)
        items, new_len = append_at_end(seq, length, mask)
        behavior = {
            f: append_at_end(values, length, values.new_zeros(length.shape))[0]
            for f, values in self._behavior_lists(interaction).items()
        }
        visible = self.positions[: items.shape[1]].unsqueeze(0) < (new_len - 1).unsqueeze(1)
        out = self.forward(items, behavior, visible)  # [B, L, H]
        return out[torch.arange(out.shape[0], device=out.device), new_len - 1]

    def predict(self, interaction) -> torch.Tensor:
        """Score of ``interaction[ITEM_ID]`` for each row: [B]."""
        state = self._inference_state(interaction)
        item = interaction[self.ITEM_ID]
        return (state * self.item_embedding(item)).sum(-1) + self.output_bias[item]

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Scores of every item for each row, as ``predict`` computes them: [B, N]."""
        return self.logits(self._inference_state(interaction))
