"""ATRank: heterogeneous user behaviours with multi-space self-attention.

Paper: Chang Zhou, Jinze Bai, Junshuai Song, Xiaofei Liu, Zhengchao Zhao, Xiusi Chen,
Jun Gao. "ATRank: An Attention-Based User Behavior Modeling Framework for
Recommendation", AAAI 2018, arXiv 1711.06632.
Reference code: github.com/jinze1994/ATRank, commit 2031fd112c0bf5c84beba284492bc4c7dcf476e7,
``atrank/model.py`` (Amazon setting: one behaviour type, items with a category). Where the
paper and that code differ, the code is the default and the paper an option:

- ``time_encoding``: ``concat`` (code: one-hot time bucket concatenated to the item and
  category embeddings, then a dense layer to H) | ``sum`` (paper: bucket and action
  embeddings added to the object embedding, then the group's projection).
- ``attention_score``: ``dot`` (code: ReLU-projected queries and keys) | ``bilinear``
  (paper: a(S_k, S) = S_k W_k S^T).
- ``vanilla_attention``: ``multihead`` (code: the target as the one query of the same
  multi-head block with FFN, ``n_layers`` blocks) | ``bilinear`` (paper: a single softmax
  e = softmax(h_t W C^T), u_t = e C).
- ``target_embedding``: ``raw`` (code: the target's item + category embedding is the query
  and the ranking vector) | ``projected`` (paper: the target behaviour projected like a
  history behaviour, with ``target_action`` and time gap 0). The one default that is not
  the code's, see the deviations.

Initialisation follows the code's TF 1 defaults: Glorot-uniform for every embedding table
and dense kernel (``tf.get_variable``'s default), zero biases and item bias, LayerNorm
1 / 0. So the item table has std sqrt(2 / (n_items + E)) (about 0.006 on 55k items), as
in the code.

Remaining deviations, with their reasons:

- Target (default ``projected``, the paper's, not the code's ``raw``): the code has one
  behaviour type and no action, so its raw target lives in the space of its history
  inputs; here every history behaviour carries its action and time bucket through its
  group's projection, and a raw target does not. Measured on the Taobao head
  (``cpu-ctr-taobao.yaml``, seed 1, 3 epochs): test AUC 0.4725 with ``raw`` (valid below
  0.5 at every epoch) against 0.5945 with ``projected``; on ml-100k (``cpu-ctr-ml-100k.yaml``,
  seed 1) ``raw`` is ahead, 0.7834 against 0.7751: a raw target is not broken, but it fails
  where items are sparse and the history's actions carry the signal.

- Behaviour groups (ours, for the paper's multi-behaviour setting): the paper groups by
  object type, the code has one group; RecBole files have one object type, so groups
  are sets of actions (``behavior_groups``, module ``behavior_groups``), each with its
  own tables and projection. The action is a token field or derived from a rating by
  ``rating_actions`` (our choice for datasets without actions). The code has no action:
  with ``concat`` it joins the one-hot time bucket in the concatenation.
- Target: one ``target_action`` for every row ("will the user <target_action> this
  item"); labels come from RecBole's labelled protocol. A raw target whose width d_g is
  not H goes through a bias-free linear map (the code's widths match: 64 + 64 = 128).
- Time buckets: ``recbole_attn.layers.time_bucket``, [2^(b-1), 2^b) ``time_unit``s (12,
  days); the code counts whole days + 1 against 2, 4, ..., 4096 (the same log2 scale,
  edges one day earlier, its gaps over 4095 days fall outside the one-hot).
- Padded queries: the code zeroes their attention rows; their outputs are never read
  here (padding is masked as keys and never pooled), so scores are the same.
- Dropout (default 0, as the code): also on the FFN output (RecBole's ``FeedForward``).
- History: the last ``MAX_ITEM_LIST_LENGTH`` behaviours (the code keeps all).
- Optimiser: Adam (RecBole's) with gradient-norm clipping at 5 (the code: SGD, rate 1.0,
  batch 32, same clipping). The L2 term on u_t and h_t (``reg_weight``) is the code's.
- ``ranking: mlp`` (ours) puts an MLP over [u_t, h_t, u_t * h_t] instead of the dot.
- Raw values: the YAML turns RecBole's min-max normalisation off (time gaps in seconds,
  raw ratings); normalising them is refused with a ConfigError.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_attn.errors import ConfigError
from recbole_attn.explain import capture
from recbole_attn.layers import MLP, distinct_rows, time_bucket
from recbole_attn.model.behavior_encoder import TARGET_EMBEDDINGS, TIME_ENCODINGS, BehaviorEncoder
from recbole_attn.model.behavior_groups import BehaviorVocabulary, group_sizes
from recbole_attn.model.multi_space_attention import SCORES, AttentionBlock

RANKINGS = ("dot", "mlp")
VANILLA = ("multihead", "bilinear")


class ATRank(SequentialRecommender):
    r"""ATRank (Zhou et al., AAAI 2018) on RecBole's labelled protocol.

    Equations -> methods (B batch, L history, H ``hidden_size``, K ``n_spaces``):

    - Raw feature spaces and behaviour embedding space: u_ij per group, s_ij = F_{M_g}(u_ij)
      into one space; S [B, L, H] -> ``BehaviorEncoder`` (``layout``, ``forward``).
    - Self-attention layer: S_k = F_{P_k}(S), A_k = softmax(a(S_k, S)), C_k = A_k F_{Q_k}(S),
      C = FFN(concat_k C_k) -> ``AttentionBlock`` x ``n_layers`` (``encode_history``).
    - Vanilla attention of the target h_t (``BehaviorEncoder.target``) over C -> u_t
      [B, N, H] (``pool``).
    - Ranking: logit = <u_t, h_t> + b_i (or an MLP) (``rank``), sigmoid in ``predict``,
      binary cross-entropy + L2 on u_t, h_t in ``calculate_loss``.
    - Attention weights of a scored pair -> ``attention_weights``.
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
        self.ranking: str = config["ranking"]
        self.vanilla_attention: str = config["vanilla_attention"]
        self.reg_weight: float = config["reg_weight"]
        self.full_sort_chunk: int = config["full_sort_chunk"]
        if self.TIME not in dataset.field2type:
            raise ConfigError(
                f"ATRank needs the time of each behaviour, but TIME_FIELD={self.TIME!r} is not "
                f"a field of dataset '{config['dataset']}'. Set TIME_FIELD and load it (load_col)."
            )
        if self.hidden_size % self.n_spaces:
            raise ConfigError(
                f"ATRank: n_spaces ({self.n_spaces}) must divide hidden_size ({self.hidden_size})"
            )
        for key, choices in [
            ("ranking", RANKINGS), ("vanilla_attention", VANILLA), ("attention_score", SCORES),
            ("time_encoding", TIME_ENCODINGS), ("target_embedding", TARGET_EMBEDDINGS),
        ]:
            if config[key] not in choices:
                raise ConfigError(f"ATRank: {key} must be one of {', '.join(choices)}, got {config[key]!r}")
        if self.time_buckets < 1 or self.time_unit <= 0:
            raise ConfigError("ATRank: time_buckets must be >= 1 and time_unit > 0")

        self.vocab = BehaviorVocabulary(config, dataset)
        self.BEHAVIOR = self.vocab.field
        self.BEHAVIOR_LIST = self.BEHAVIOR + config["LIST_SUFFIX"]
        self.TIME_LIST = self.TIME + config["LIST_SUFFIX"]
        self.group_sizes = group_sizes(self.vocab, config["group_embedding_size"])
        self.target_group = self.vocab.group_of[self.vocab.target_action]
        self.encoder = BehaviorEncoder(
            dataset, self.vocab, self.group_sizes, config["item_fields"], self.hidden_size,
            self.time_buckets, config["use_time"], config["time_encoding"], config["target_embedding"],
        )
        args = (self.hidden_size, self.n_spaces, self.inner_size, self.dropout_prob)
        self.blocks = nn.ModuleList(AttentionBlock(*args, config["attention_score"]) for _ in range(self.n_layers))
        if self.vanilla_attention == "multihead":
            self.vanilla_blocks = nn.ModuleList(AttentionBlock(*args, "dot") for _ in range(self.n_layers))
        else:
            self.vanilla = nn.Linear(self.hidden_size, self.hidden_size, bias=False)  # W
        self.item_bias = nn.Embedding(self.n_items, 1)
        if self.ranking == "mlp":
            self.rank_mlp = MLP(3 * self.hidden_size, list(config["mlp_hidden_size"]), config["mlp_activation"], self.dropout_prob)
            self.rank_out = nn.Linear(self.rank_mlp.out_dim, 1)
        self.loss_fct = nn.BCEWithLogitsLoss()
        self.apply(self._init_weights)
        nn.init.zeros_(self.item_bias.weight)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """The reference's TF 1 defaults: Glorot-uniform tables and kernels, zero biases
        (plus a zero padding row, which no real behaviour reads)."""
        if isinstance(module, (nn.Embedding, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    # ---- behaviours -------------------------------------------------------------------
    def bucket(self, target_time: torch.Tensor, behavior_time: torch.Tensor) -> torch.Tensor:
        """Time bucket of each behaviour: target_time [B], behavior_time [B, L] -> [B, L]."""
        return time_bucket(target_time.unsqueeze(-1) - behavior_time, self.time_buckets, self.time_unit)

    def history(self, interaction):
        """Items, actions, time buckets and mask of the history: each [B, L]."""
        items = interaction[self.ITEM_SEQ]
        lengths = interaction[self.ITEM_SEQ_LEN]
        mask = torch.arange(items.shape[1], device=items.device).unsqueeze(0) < lengths.unsqueeze(1)
        actions = self.encoder.actions_of(interaction[self.BEHAVIOR_LIST])
        buckets = self.bucket(interaction[self.TIME], interaction[self.TIME_LIST])
        return items, actions, buckets, mask

    def encode_history(self, interaction, need_weights: bool = False):
        """C [B, L, H], mask [B, L] and per-space self-attention A [n_layers][B, K, L, L] (or Nones).

        Without dropout (eval mode, or ``dropout_prob`` 0 in training) and without weights,
        the blocks run once per distinct history, then C is spread back: a labelled batch
        scores ~100 items against each, a training batch's sampled negatives repeat their
        positive's history (the same values and gradients, at half the cost with one
        negative); not while an explanation records the weights of every row."""
        items, actions, buckets, mask = self.history(interaction)
        stochastic = self.training and self.dropout_prob > 0  # rows of one history get their own masks
        if not (stochastic or need_weights or capture.active()):
            rows, inverse = distinct_rows(torch.cat([items, actions, buckets, mask.long()], 1))
            if len(rows) < len(inverse):
                c, _, _ = self._encode(items[rows], actions[rows], buckets[rows], mask[rows], False)
                return c[inverse], mask, [None] * len(self.blocks)
        return self._encode(items, actions, buckets, mask, need_weights)

    def _encode(self, items, actions, buckets, mask, need_weights: bool):
        c = self.encoder(items, actions, buckets, mask)
        attns = []
        for block in self.blocks:
            c, attn = block(c, c, mask, need_weights)
            attns.append(attn)
        return c, mask, attns

    def pool(self, h: torch.Tensor, c: torch.Tensor, mask: torch.Tensor, need_weights: bool = False):
        """Vanilla attention: h [B, N, H], c [B, L, H], mask [B, L] -> (u [B, N, H], e).

        e: [B, K, N, L] of the last block (``multihead``, None unless ``need_weights``) or
        [B, 1, N, L] (``bilinear``); padding keys get 0.
        """
        if self.vanilla_attention == "multihead":
            e = None
            for block in self.vanilla_blocks:
                h, e = block(h, c, mask, need_weights)
            return h, e
        logits = self.vanilla(h) @ c.transpose(1, 2) / math.sqrt(self.hidden_size)
        keys = mask.unsqueeze(1)
        e = logits.masked_fill(~keys, float("-inf")).softmax(-1)
        e = torch.where(keys, e, torch.zeros_like(e))
        capture.record(self.vanilla, e)
        return e @ c, e.unsqueeze(1)

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
        h = self.encoder.target(items).unsqueeze(1)  # [B, 1, H]
        u, e = self.pool(h, c, mask, need_weights)
        e = None if e is None else e[:, :, 0]
        return self.rank(u, h, items.unsqueeze(1)).squeeze(1), u.squeeze(1), h.squeeze(1), attns, e

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
            h = self.encoder.target(chunk).unsqueeze(0).expand(c.shape[0], -1, -1)  # [B, n, H]
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
            target over the history, per space [B, K, L] (``multihead``, last block) or
            [B, 1, L] (``bilinear``), padding 0; ``mask`` [B, L].
        """
        _, _, _, attns, e = self._forward(interaction, need_weights=True)
        mask = torch.arange(e.shape[-1], device=e.device).unsqueeze(0) < interaction[self.ITEM_SEQ_LEN].unsqueeze(1)
        return {"self": attns[-1], "layers": attns, "target": e, "mask": mask}
