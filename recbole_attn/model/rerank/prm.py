"""PRM: personalised transformer re-ranking of a trained ranker's top-K list.

Paper: Changhua Pei, Yi Zhang, Yongfeng Zhang, Fei Sun, Xiao Lin, Hanxiao Sun, Jian Wu,
Peng Jiang, Junfeng Ge, Wenwu Ou, Dan Pei. "Personalized Re-ranking for
Recommendation", RecSys 2019, arXiv 1904.06813.

How PRM runs inside RecBole (the simplest correct design we found):

- PRM is a ``SequentialRecommender`` on the ordinary leave-one-out split, so RecBole
  builds the validation and test rows (history, next item) exactly as for the ranker.
- The frozen ranker is rebuilt from ``ranker_checkpoint`` and kept as the submodule
  ``ranker`` (``requires_grad`` off, always in eval mode, called under ``no_grad``); its
  weights are saved inside PRM's checkpoints, so save -> load needs nothing else.
- Training: ``PRMTrainer.fit`` (``recbole_attn.model.rerank.prm_trainer``) ignores
  RecBole's training loader (its rows are the ranker's own training targets) and trains
  on the validation-point rows instead
  (``recbole_attn.data.rerank.validation_point_loaders``): a share ``prm_holdout_ratio``
  of those users is held out for early stopping, the rest are PRM's training lists.
  Each batch builds its lists on the fly from the ranker (deterministic: the ranker is
  frozen). Lists that do not contain the clicked item carry no signal for a softmax
  over the list and are left out of the loss. PRM so reads one interaction per user
  that its ranker never trained on; ``recbole-attn benchmark --ranker_control`` also
  retrains the ranker on train + those very rows, early-stopped on the same held-out
  users (``recbole_attn.data.rerank.train_and_validation_loaders``): the control that a
  gain over the initial list must also beat.
- Evaluation: ``full_sort_predict`` returns scores for every item that order the items
  as the ranker does, with its top K re-ordered by PRM; with ``rerank = False`` it
  returns the ranker's order unchanged. RecBole's own evaluator then measures the initial
  and the re-ranked list with the same code (``PRMTrainer.evaluate_initial``).

Trusted checkpoints: a RecBole checkpoint pickles its ``Config``, so loading it can run
code. PRM loads ``ranker_checkpoint`` (``recbole_attn.model.rerank.ranker``) only if
the file lies inside this run's ``checkpoint_dir`` (files this project wrote) or
``trust_checkpoint=True`` is set. The
ranker must have been trained on this very dataset: same name, and the same user/item id
mappings (the checkpoint's ``dataset_fingerprint``; a checkpoint without one is used
with a warning).

Deviations from the paper:

- The personalised vector PV_i: the paper takes the hidden layer of a pre-trained CTR
  model for (user, item i). Here the pre-trained model is the ranker itself: for a ranker
  that scores ``s_i = u . v_i`` (SASRec, BERT4Rec-style forward, BPR, ...), PV_i =
  [u * v_i ; s_i], the element-wise terms of that dot product and their sum, where u is
  the ranker's sequence representation (``forward(item_seq, item_seq_len)``) or user
  embedding and v_i its item embedding; a ranker with another score that can split it
  into per-dimension terms (a ``score_terms(interaction, items)`` method, e.g. AttRec's
  distances) gives PV_i = [those terms ; s_i]; for any other ranker PV_i = [s_i].
- Item features x_i: PRM's own item id embedding concatenated with embeddings of the
  item fields (token; token_seq mean-pooled; float scaled), not the ranker's raw
  feature vectors, which a generic RecBole model does not expose.
- One clicked item per list (the next item of leave-one-out), so the paper's
  cross-entropy over clicked items is a softmax cross-entropy with one target.
- A LayerNorm and dropout follow the input projection, as in SASRec/BERT.
- The initial list always comes from the ranker's full ranking (RecBole's sequential
  protocol: items of the history are not removed).
"""

from __future__ import annotations

from logging import getLogger

import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import TransformerEncoder
from recbole.utils import InputType

from recbole_attn.data.rerank import topk_lists
from recbole_attn.errors import ConfigError
from recbole_attn.layers import ItemFeatureEmbedding
from recbole_attn.model.rerank.prm_trainer import PRMTrainer
from recbole_attn.model.rerank.ranker import load_ranker, personal_vector_mode, probe_batch


class PRM(SequentialRecommender):
    r"""PRM (Pei et al.): transformer re-ranking of a frozen ranker's top-K list.

    Equations of the paper -> methods (B batch, K ``list_length``, N items):

    - Initial list S = top-K of the ranker's scores, item 0 (padding) excluded ->
      ``ranker_lists``.
    - Input layer E' = [x_i ; PV_i] + PE_i (learned embedding of the initial rank i),
      E = E' W^E + b^E -> ``item_features``, ``personal_vectors``, ``forward``.
    - Encoding layer: N_x transformer blocks (multi-head self-attention + FFN, residuals,
      LayerNorm) over the list, no causal mask -> ``forward`` (RecBole's
      ``TransformerEncoder``).
    - Output layer Score(i) = softmax(F W^O + b^O) over the list -> ``forward`` returns
      the logits; loss L = -sum_i y_i log P(y_i | X, PV) -> ``calculate_loss``.
    - Re-ranked list: sort S by Score -> ``full_sort_predict``.

    Without the rank embedding, ``forward`` is exactly permutation-equivariant in the
    list (no other positional signal exists).
    """

    input_type = InputType.POINTWISE
    is_reranker = True
    trainer_class = PRMTrainer

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.list_length: int = config["list_length"]
        self.use_personal_vector: bool = config["use_personal_vector"]
        self.use_rank_embedding: bool = config["use_rank_embedding"]
        self.embedding_size: int = config["embedding_size"]
        self.hidden_size: int = config["hidden_size"]
        self.n_layers: int = config["n_layers"]
        self.n_heads: int = config["n_heads"]
        self.inner_size: int = config["inner_size"]
        self.hidden_dropout_prob: float = config["hidden_dropout_prob"]
        self.attn_dropout_prob: float = config["attn_dropout_prob"]
        self.hidden_act: str = config["hidden_act"]
        self.layer_norm_eps: float = config["layer_norm_eps"]
        self.initializer_range: float = config["initializer_range"]
        if config["loss_type"] != "CE":
            raise ConfigError(
                f"PRM supports loss_type CE only (softmax over the list), got {config['loss_type']!r}"
            )
        if not 1 <= self.list_length <= self.n_items - 1:
            raise ConfigError(
                f"list_length={self.list_length} must be in [1, {self.n_items - 1}]: dataset "
                f"'{config['dataset']}' has {self.n_items - 1} items. Set list_length to at most that."
            )
        if self.hidden_size % self.n_heads:
            raise ConfigError(f"n_heads={self.n_heads} must divide hidden_size={self.hidden_size}")
        self.rerank = True  # False: full_sort_predict returns the initial (ranker's) order

        # Item features x_i: id embedding (+) item fields (token, token_seq mean-pooled, float).
        self.item_embedding = ItemFeatureEmbedding(
            dataset, self.embedding_size, config["item_feature_fields"], key="item_feature_fields"
        )
        self.feature_fields: list[str] = self.item_embedding.fields
        feature_dim = self.item_embedding.out_dim

        # The ranker (loaded after _init_weights so its weights stay the checkpoint's).
        ranker = load_ranker(config, dataset, type(self).__name__, self.n_items)
        probe = probe_batch(dataset, self.device)
        self.personal_mode = (
            personal_vector_mode(ranker, probe, self.n_items, self.ITEM_SEQ, self.ITEM_SEQ_LEN)
            if self.use_personal_vector
            else "none"
        )
        pv_dim = {"none": 0, "score": 1}.get(self.personal_mode, None)
        if self.personal_mode == "terms":
            with torch.no_grad():
                pv_dim = ranker.score_terms(probe, probe[self.ITEM_SEQ][:, :1]).shape[-1] + 1
        elif pv_dim is None:
            pv_dim = ranker.item_embedding.embedding_dim + 1
        self.input_dim = feature_dim + pv_dim

        self.rank_embedding = (  # PE, added in the concatenated input space as in the paper
            nn.Embedding(self.list_length, self.input_dim) if self.use_rank_embedding else None
        )
        self.input_proj = nn.Linear(self.input_dim, self.hidden_size)  # W^E, b^E
        self.layer_norm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)
        self.encoder = TransformerEncoder(
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            hidden_size=self.hidden_size,
            inner_size=self.inner_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attn_dropout_prob=self.attn_dropout_prob,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
        )
        self.output = nn.Linear(self.hidden_size, 1)  # W^O, b^O
        self.register_buffer("ranks", torch.arange(self.list_length), persistent=False)
        self.apply(self._init_weights)

        self.ranker = ranker
        self.ranker.requires_grad_(False)
        self.ranker.eval()
        getLogger().info(f"PRM: ranker {type(ranker).__name__}, personal vector mode '{self.personal_mode}'")

    # ----------------------------------------------------------------- set-up
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    # checkpoints written before the item features used ``layers.ItemFeatureEmbedding``
    _OLD_KEYS = (("item_embedding.weight", "item_embedding.id_embedding.weight"),
                 ("field_embeddings.", "item_embedding.embeddings."))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Reads the earlier key names of the item-feature tables too."""
        for old, new in self._OLD_KEYS:
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True):
        """Train/eval mode for PRM; the frozen ranker always stays in eval mode."""
        super().train(mode)
        if hasattr(self, "ranker"):
            self.ranker.eval()
        return self

    # ----------------------------------------------------------------- lists
    @torch.no_grad()
    def ranker_scores(self, interaction) -> torch.Tensor:
        """The ranker's scores of all items, padding at -inf: [B, N]."""
        scores = self.ranker.full_sort_predict(interaction).view(len(interaction), -1).float().clone()
        scores[:, 0] = -torch.inf
        return scores

    @torch.no_grad()
    def ranker_lists(self, interaction):
        """Initial lists: all scores [B, N], items [B, K] (best first, never 0), their scores [B, K]."""
        scores = self.ranker_scores(interaction)
        items, list_scores = topk_lists(scores, self.list_length)
        return scores, items, list_scores

    @torch.no_grad()
    def personal_vectors(self, interaction, items: torch.Tensor, list_scores: torch.Tensor):
        """PV_i from the ranker: [B, K, P], or None without personal vectors."""
        if self.personal_mode == "none":
            return None
        s = list_scores.unsqueeze(-1)  # [B, K, 1]
        if self.personal_mode == "score":
            return s
        if self.personal_mode == "terms":
            return torch.cat([self.ranker.score_terms(interaction, items), s], dim=-1)
        if self.personal_mode == "sequence":
            u = self.ranker.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        else:
            u = self.ranker.user_embedding(interaction[self.USER_ID])
        v = self.ranker.item_embedding(items)  # [B, K, H]
        return torch.cat([u.unsqueeze(1) * v, s], dim=-1)

    def item_features(self, items: torch.Tensor) -> torch.Tensor:
        """x_i: id embedding and item-field embeddings, concatenated: [B, K] -> [B, K, D_x]."""
        return self.item_embedding(items)

    # ----------------------------------------------------------------- model
    def forward(
        self, items: torch.Tensor, pv: torch.Tensor | None, ranks: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Re-ranking logits over the list.

        Args:
            items: [B, K] item ids of the initial list.
            pv: [B, K, P] personalised vectors, or None.
            ranks: [B, K] initial rank (0 = top) of each item; default: list order.

        Returns:
            logits [B, K]; softmax over K gives Score(i).
        """
        x = self.item_features(items)
        e = x if pv is None else torch.cat([x, pv.to(x.dtype)], dim=-1)  # E' [B, K, D]
        if self.rank_embedding is not None:
            ranks = self.ranks.expand_as(items) if ranks is None else ranks
            e = e + self.rank_embedding(ranks)
        h = self.dropout(self.layer_norm(self.input_proj(e)))  # [B, K, d]
        mask = torch.zeros(items.size(0), 1, 1, items.size(1), dtype=h.dtype, device=h.device)  # all real
        h = self.encoder(h, mask, output_all_encoded_layers=False)[-1]
        return self.output(h).squeeze(-1)

    def list_logits(self, interaction):
        """The initial list and PRM's logits on it: (scores [B, N], items [B, K], logits [B, K])."""
        scores, items, list_scores = self.ranker_lists(interaction)
        pv = self.personal_vectors(interaction, items, list_scores)
        return scores, items, self.forward(items, pv)

    def calculate_loss(self, interaction) -> torch.Tensor:
        """Softmax cross-entropy on the clicked item; lists without it are left out."""
        _, items, logits = self.list_logits(interaction)
        hit = items == interaction[self.POS_ITEM_ID].unsqueeze(1)  # [B, K]
        has_click = hit.any(dim=1)
        if not bool(has_click.any()):
            return logits.sum() * 0.0
        target = hit.float().argmax(dim=1)
        return F.cross_entropy(logits[has_click], target[has_click])

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Order-preserving scores of all items: [B, N].

        Score = -(rank in the ranker's full order), with the top K re-ordered by PRM (or
        left as the ranker ordered them when ``self.rerank`` is False). Ranks are exact
        in float32, so ties and score scales of the ranker cannot disturb the order.
        """
        scores, items, logits = self.list_logits(interaction)
        order = scores.argsort(dim=1, descending=True, stable=True)  # [B, N] items by rank
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.size(1), device=order.device).expand_as(order))
        if self.rerank:
            new_order = logits.argsort(dim=1, descending=True, stable=True)  # positions by PRM
            new_rank = torch.empty_like(new_order)
            new_rank.scatter_(1, new_order, self.ranks.expand_as(new_order))
            rank.scatter_(1, items, new_rank)
        return -rank.to(torch.float32)

    def predict(self, interaction) -> torch.Tensor:
        """Score of ``item_id`` per row, from ``full_sort_predict``: [B]."""
        item = interaction[self.ITEM_ID].unsqueeze(1)
        return self.full_sort_predict(interaction).gather(1, item).squeeze(1)
