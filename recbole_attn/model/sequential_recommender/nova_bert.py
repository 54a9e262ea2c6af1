"""NOVA-BERT: BERT4Rec's cloze training with non-invasive side-information fusion.

Papers:

- Chang Liu, Xiaoguang Li, Guohao Cai, Zhenhua Dong, Hong Zhu, Lifeng Shang.
  "Noninvasive Self-attention for Side Information Fusion in Sequential
  Recommendation", AAAI 2021, arXiv 2103.03578.
- Fei Sun, Jun Liu, Jian Wu, Changhua Pei, Xiao Lin, Wenwu Ou, Peng Jiang. "BERT4Rec:
  Sequential Recommendation with Bidirectional Encoder Representations from
  Transformer", CIKM 2019, arXiv 1904.06690.

Reference code: the NOVA authors published none (none found on GitHub; third-party
reimplementations differ from the paper, e.g. a separate side-attention term), so NOVA
follows the paper's text. The BERT4Rec part follows github.com/FeiSun/BERT4Rec at commit
615eaf2004abecda487a38d5b0c72f3dcfcae5b3: ``modeling.py`` (embedding LayerNorm, post-LN
layers, GELU, truncated-normal init 0.02, output head with shared item embedding and
bias), ``gen_data_fin.py`` (windows, masking), ``optimization.py`` and
``bert_train/bert_config_ml-1m_64.json`` (training recipe, see the YAML).

Deviations:

- Training samples (``train_samples``): by default (``prefix``) RecBole's one sample per
  prefix of a user's training sequence, the data of RecBole's own baselines on the same
  split (short prefixes weigh more than in BERT4Rec); ``window`` keeps BERT4Rec's
  windows (``recbole_attn/data/windows.py``). Its code copies each window 10 times with
  fresh masks (``dupe_factor``); here every epoch draws fresh masks. The target is
  appended after the history, a full history dropping its oldest item
  (``recbole_attn/model/cloze.py``).
- Masking: every real item is masked with probability ``mask_ratio``, a sample without a
  mask gets one; masked items are always replaced by [mask] (the code's ``mask_prob``
  1.0 in its run scripts). The code adds one last-item-only sample per window next to
  10 cloze copies; here a share ``mask_last_ratio`` of each batch (RecBole's 0.5).
- Side information of a masked item is hidden (the mask token has no item features,
  behaviour values at masked positions read "unknown"), so the model cannot read the
  answer's genre or rating; the paper does not say. Position is always shown.
- Side-embedding scale (``side_layer_norm``, on by default): in NOVA mode the id stream
  meets the fusion LayerNorm'd (norm about sqrt(H) = 8 at H = 64), raw side embeddings
  at their initial scale (truncated normal, std 0.02: norm about 0.14), so Q/K saw the
  sides at ~2% and the gate stayed uniform; a LayerNorm per looked-up side embedding brings them to the id stream's
  scale. The paper does not describe the side embedding layer; this mirrors BERT's
  embedding LayerNorm. Invasive mode fuses raw item and side embeddings (both at
  initial scale) and LayerNorms the sum, as BERT's embedding layer.
- Encodings (``recbole_attn/model/side_features.py``): behaviour floats are bucketised by
  training quantiles (``bucket``) or standardised and embedded linearly (``linear``);
  item token_seq fields are mean-pooled. The paper names the features, not encodings.
- Fusion: each NOVA layer has its own fusion weights (the paper gives one F without
  saying whether they are shared); ``gating`` is F = sum_i G_i f_i, G = softmax(F W^F),
  plus a bias that cancels in the softmax.
- Optimiser: torch's AdamW corrects the moment bias, BERT4Rec's optimizer does not; the
  YAML's learning rate and batch size are RecBole's (the code's 1e-4 and 256 belong
  with its 400,000 steps). The padding item 0 is part of the output softmax (RecBole's
  convention; its score is masked in full-ranking evaluation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_attn.errors import ConfigError
from recbole_attn.model.cloze import cloze_inputs, inference_inputs
from recbole_attn.model.nova_layers import FUSION_TYPES, Fusion, NOVALayer
from recbole_attn.model.side_features import (
    FLOAT_ENCODINGS,
    SideFeatures,
    behavior_side_fields,
    item_side_fields,
)

ATTENTION_TYPES = ("nova", "invasive")


class NOVABERT(SequentialRecommender):
    r"""NOVA-BERT (Liu et al.) on BERT4Rec (Sun et al.): bidirectional transformer, cloze task.

    Equations of the papers -> methods:

    - BERT4Rec embedding layer h^0_i = v_i + p_i (item plus learned position embedding)
      -> ``forward`` with ``attention_type: invasive``, ``fusion_type: add`` and no side
      fields (AttnBERT4Rec).
    - NOVA's invasive baseline: R^0 = F(E_id, S_1, ..., S_m), all side information fused
      into the input once, then standard layers -> ``forward`` (``invasive``).
    - Side information S: item-related (fields of the .item file, by item id) and
      behaviour-related (position, interaction fields) -> ``SideFeatures``.
    - NOVA layer: NOVA(R, S) = softmax(Q K^T / sqrt(d)) V with Q = F(R, S) W_Q,
      K = F(R, S) W_K, V = R W_V; S is given to every layer and never propagated ->
      ``NOVALayer.forward`` (``nova``); fusion functions add, concat, gating -> ``Fusion``.
    - Multi-head attention, GELU feed-forward, residual, dropout, LayerNorm ->
      ``NOVALayer.forward``.
    - Output layer P(v) = softmax(GELU(h W^P + b^P) E^T + b^O) with the shared item
      embedding E -> ``forward`` (head) and ``logits``.
    - Cloze loss: negative log-likelihood of the masked items -> ``calculate_loss``
      (inputs from ``cloze_inputs``).
    - Inference: append [mask] after the most recent items and rank all items by the
      output there -> ``_inference_state``, ``predict``, ``full_sort_predict``.

    Tensor shapes: B batch, L ``MAX_ITEM_LIST_LENGTH``, H ``hidden_size``, N items
    (``n_items``, padding id 0 included); the mask token is item id N.
    ``side_fields_used``: {"item": [...], "behavior": [...]}, the side fields read
    (``position`` listed under behaviour).
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
        self._check_options(side)

        h, name = self.hidden_size, type(self).__name__
        nova = self.attention_type == "nova"
        self.mask_token = self.n_items
        self.item_embedding = nn.Embedding(self.n_items + 1, h, padding_idx=0)
        self.side = SideFeatures(
            dataset,
            h,
            self.max_seq_length,
            self.n_items,
            item_side_fields(dataset, side["item_side_fields"], name),
            behavior_side_fields(dataset, side["behavior_side_fields"], self.list_suffix, name),
            side["use_position"],
            side["behavior_float_encoding"],
            side["num_buckets"],
            self.layer_norm_eps if nova and side["side_layer_norm"] else None,
        )
        self.side_fields_used: dict[str, list[str]] = self.side.fields_used
        n_sides = self.side.n_sides
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
        self.apply(self._init_weights)

    # ------------------------------------------------------------------ configuration

    def _side_options(self, config) -> dict:
        """The side-information settings (AttnBERT4Rec fixes them).

        ``item_side_fields``: None (``~``) = every loaded item feature, [] = none.
        """
        fields = config["item_side_fields"]
        return {
            "item_side_fields": None if fields is None else list(fields),
            "behavior_side_fields": list(config["behavior_side_fields"] or []),
            "use_position": bool(config["use_position"]),
            "side_layer_norm": bool(config["side_layer_norm"]),
            "behavior_float_encoding": config["behavior_float_encoding"],
            "num_buckets": config["num_buckets"],
            "fusion_type": config["fusion_type"],
            "attention_type": config["attention_type"],
        }

    def _check_options(self, side: dict) -> None:
        name = type(self).__name__
        choices = (
            ("fusion_type", self.fusion_type, FUSION_TYPES),
            ("attention_type", self.attention_type, ATTENTION_TYPES),
            ("behavior_float_encoding", side["behavior_float_encoding"], FLOAT_ENCODINGS),
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
        if side["behavior_float_encoding"] == "bucket" and side["num_buckets"] < 1:
            raise ConfigError(f"{name}: num_buckets must be >= 1, got {side['num_buckets']}")

    def _init_weights(self, module: nn.Module) -> None:
        """BERT4Rec's init: truncated normal (2 std) of std ``initializer_range``, zero biases."""
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
        sides = self.side(item_seq, behavior, visible)
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
        return {f: interaction[f + self.list_suffix] for f in self.side.behavior_fields}

    def calculate_loss(self, interaction) -> torch.Tensor:
        """Cross-entropy over all items at the masked positions of the training sequences."""
        behavior = {f: (v, interaction[f]) for f, v in self._behavior_lists(interaction).items()}
        batch = cloze_inputs(
            interaction[self.ITEM_SEQ],
            interaction[self.ITEM_SEQ_LEN],
            interaction[self.ITEM_ID],
            behavior,
            self.mask_token,
            self.mask_ratio,
            self.mask_last_ratio,
        )
        out = self.forward(batch.items, batch.behavior, batch.visible)
        return F.cross_entropy(self.logits(out[batch.masked]), batch.labels)

    def _inference_state(self, interaction) -> torch.Tensor:
        """Output at a mask token appended after the most recent items: [B, H].

        A history of length L drops its oldest item to make room, so the L-1 most recent
        items are always read.
        """
        seq, length = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        batch = inference_inputs(seq, length, self._behavior_lists(interaction), self.mask_token)
        return self.forward(batch.items, batch.behavior, batch.visible)[batch.masked]

    def predict(self, interaction) -> torch.Tensor:
        """Score of ``interaction[ITEM_ID]`` for each row: [B]."""
        state = self._inference_state(interaction)
        item = interaction[self.ITEM_ID]
        return (state * self.item_embedding(item)).sum(-1) + self.output_bias[item]

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Scores of every item for each row, as ``predict`` computes them: [B, N]."""
        return self.logits(self._inference_state(interaction))
