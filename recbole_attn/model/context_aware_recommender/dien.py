"""AttnDIEN: Deep Interest Evolution Network for click-through-rate prediction.

Paper: Guorui Zhou, Na Mou, Ying Fan, Qi Pi, Weijie Bian, Chang Zhou, Xiaoqiang Zhu,
Kun Gai. "Deep Interest Evolution Network for Click-Through Rate Prediction",
AAAI 2019, arXiv 1809.03672.
Reference code: github.com/mouna99/dien, ``script/model.py``
(``Model_DIN_V2_Gru_Vec_attGru_Neg``, ``build_fcn_net``) and ``script/utils.py``
(``din_fcn_attention``, ``VecAttGRUCell``), commit 1f314d16aa17. The defaults follow
it; where the paper's text differs, the paper is an option (AttnDIEN.yaml).

Deviations from the paper and the code:

- Data: RecBole's sequential pipeline, one sample per prefix of a user's history
  (``item_id_list`` [B, L], right-padded, target ``item_id``); label-0 rows are items
  sampled by ``train_neg_sample_args``. Evaluation: RecBole's labelled protocol with
  sampled negatives, AUC, GAUC and LogLoss (AttnDIEN.yaml).
- Auxiliary-loss negatives are drawn afresh every batch, uniformly over the real items
  (the code reads one drawn when the data were written; RecBole's DIEN draws once per
  dataset), never an item the same user clicked in this batch (``unclicked_negatives``;
  redrawn up to ``aux_neg_max_tries`` times, a position whose draws all fail is left out).
  Items clicked outside the batch are not excluded.
- The auxiliary loss covers pairs (h_t, e_{t+1}), t = 1..T-1, averaged over the real
  positions of the batch's distinct (user, history) rows (a sampled negative repeats its
  positive's history and counts once; the extractor also runs once per distinct
  history). The target is not used as e_{T+1} (its label may be 0). Auxiliary net:
  BatchNorm (real positions only) -> MLP ``aux_mlp`` (code: 100-50, sigmoid) -> one
  logit, the same model as the code's 2-way softmax.
- Attention: the code's ``din_fcn_attention``, q = PReLU(W e_a + b) (slopes 0.1,
  ``attention_query_proj``), DIN's unit over [h_t, q, h_t - q, h_t * q], softmax over
  the real positions; eq. (8) writes a bilinear h_t W e_a.
- GRU hidden size = behaviour-embedding size D (code: 36), so attention compares h_t
  with the target.
- Final MLP input [user, e_a, sum_t e_t, e_a * sum_t e_t, h'_T] (the code's), normalised
  as its ``build_fcn_net`` (``mlp_input_norm``); MLP 200-80 with Dice, one logit, sigmoid
  only in ``predict``. sum_t e_t runs over real items (the code adds padded positions).
- ``mlp_input_norm: batch`` trains BatchNorm (running statistics at inference). The code
  calls ``tf.layers.batch_normalization`` without ``training=True``, so its graph is a
  learned per-channel affine (``affine``; its auxiliary BatchNorm too, trained here as
  BatchNorm). ``none``: the paper. Dice uses running statistics at inference (the code's
  uses the current batch's, so a score would depend on the other rows).
- ``gru_type: GRU`` is the paper's "two-layer GRU + attention" baseline (attention pooling
  of a second GRU's states).
- Extractor: ``nn.GRU`` over right-padded histories (real states never read padding;
  padded states zeroed); the evolving cells are ours, looped over time, a padded step
  keeps the state. ``_init_weights``: Xavier normal for embeddings and matrices (per
  gate for ``nn.GRU``), zero biases, as RecBole's DIEN; the code's ``glorot_uniform``
  has the same variance, and its ``GRUCell`` starts the gate biases at 1 (here 0; not
  measured).
- ``use_user_id`` adds a user id embedding to the final MLP input (the code does);
  ``user_fields`` as in DIN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_attn import evaluator as _evaluator  # noqa: F401  (registers the value metric GAUC)
from recbole_attn.errors import ConfigError
from recbole_attn.layers import (
    MLP,
    ChannelPReLU,
    ItemFeatureEmbedding,
    TargetAttention,
    distinct_rows,
    mlp_input_norm,
    user_feature_embedding,
    xavier_init,
)
from recbole_attn.model.interest_evolution import (
    GRU_TYPES,
    AttentionalGRU,
    evolve,
    evolve_shared,
    unclicked_negatives,
)


class AttnDIEN(SequentialRecommender):
    r"""DIEN (Zhou et al., AAAI 2019): interest extractor GRU with an auxiliary loss, and an
    interest-evolving layer driven by attention to the target item.

    Equations -> methods (B batch, L history length, D embedding = GRU size, N items;
    ``evolve``, ``evolve_shared``, ``AttentionalGRU``, ``unclicked_negatives`` live in
    ``recbole_attn.model.interest_evolution``):

    - Behaviour and target embedding e = [id ⊕ item features] -> ``item_embedding``.
    - Interest extractor (eq. 1-4): h_t = GRU(e_t) over the real items ->
      ``interests``.
    - Auxiliary loss (eq. 6-7): -mean_t [log sigmoid(f(h_t, e_{t+1})) +
      log(1 - sigmoid(f(h_t, \hat e_{t+1})))], f the auxiliary MLP, \hat e a negative drawn
      every batch -> ``sample_aux_negatives`` (``unclicked_negatives``), ``auxiliary_loss``.
    - Attention a_t = softmax_t(unit(h_t, q)), q = PReLU(W e_a) (eq. 8, the code's MLP
      unit) -> ``query``, ``attention``, applied in ``evolve``.
    - Interest evolving (eq. 9-11): GRU + attention pooling, AIGRU (i'_t = a_t h_t), AGRU,
      AUGRU (``gru_type``) -> ``evolve`` with ``AttentionalGRU`` (``evolver``).
    - Final MLP over BN([user, e_a, sum e, e_a * sum e, h'_T]) -> one logit -> ``mlp_input``,
      ``forward``.
    - Loss (eq. 12): L = L_target (BCE) + alpha * L_aux -> ``calculate_loss``.
    - Ranking all items: the extractor once per row, the evolving layer's history side
      once per row (eval mode, ``evolve_shared``) -> ``full_sort_predict``.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL = config["LABEL_FIELD"]
        self.embedding_size: int = config["embedding_size"]
        item_fields = config["item_fields"]  # None = every loaded item feature
        self.item_fields: list[str] | None = None if item_fields is None else list(item_fields)
        self.use_user_id: bool = config["use_user_id"]
        self.gru_type: str = config["gru_type"]
        self.alpha: float = config["alpha"]
        self.aux_mlp: list[int] = list(config["aux_mlp"])
        self.aux_activation: str = config["aux_activation"]
        self.attention_mlp: list[int] = list(config["attention_mlp"])
        self.attention_activation: str = config["attention_activation"]
        self.mlp_hidden_size: list[int] = list(config["mlp_hidden_size"])
        self.activation: str = config["activation"]
        self.dropout_prob: float = config["dropout_prob"]
        self.attention_query_proj: bool = config["attention_query_proj"]
        self.mlp_input_norm: str = str(config["mlp_input_norm"]).lower()
        self.full_sort_chunk: int = config["full_sort_chunk"]
        self.aux_neg_max_tries: int = config["aux_neg_max_tries"]
        if self.gru_type not in GRU_TYPES:
            raise ConfigError(
                f"gru_type must be one of {', '.join(GRU_TYPES)}, got {self.gru_type!r} "
                "(set gru_type in AttnDIEN.yaml or on the command line)"
            )
        if self.full_sort_chunk < 1:
            raise ConfigError(f"full_sort_chunk must be >= 1, got {self.full_sort_chunk}")
        if self.aux_neg_max_tries < 1:
            raise ConfigError(f"aux_neg_max_tries must be >= 1, got {self.aux_neg_max_tries}")
        if self.n_items < 3:
            raise ConfigError("AttnDIEN needs at least two real items to draw negatives")

        self.item_embedding = ItemFeatureEmbedding(dataset, self.embedding_size, self.item_fields)
        d = self.item_embedding.out_dim
        self.hidden_size = d
        self.user_embedding = user_feature_embedding(
            dataset, self.embedding_size, config["user_fields"], include_id=self.use_user_id
        )
        user_dim = self.user_embedding.out_dim if self.user_embedding is not None else 0
        # interest extractor layer
        self.extractor = nn.GRU(d, d, batch_first=True)
        self.aux_norm = nn.BatchNorm1d(2 * d)
        self.aux_net = MLP(2 * d, self.aux_mlp, activation=self.aux_activation)
        self.aux_out = nn.Linear(self.aux_net.out_dim, 1)
        # interest evolving layer
        self.attention = TargetAttention(
            d, self.attention_mlp, activation=self.attention_activation, softmax=True
        )
        self.query = (
            nn.Sequential(nn.Linear(d, d), ChannelPReLU(d, init=0.1)) if self.attention_query_proj else nn.Identity()
        )
        kind = self.gru_type if self.gru_type in ("AGRU", "AUGRU") else "GRU"
        self.evolver = AttentionalGRU(d, d, kind)
        # prediction
        self.mlp_in_dim = user_dim + 4 * d
        self.mlp_norm = mlp_input_norm(self.mlp_input_norm, self.mlp_in_dim)
        self.mlp = MLP(self.mlp_in_dim, self.mlp_hidden_size, activation=self.activation, dropout=self.dropout_prob)
        self.out = nn.Linear(self.mlp.out_dim, 1)
        self.loss_fct = nn.BCEWithLogitsLoss()
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        xavier_init(module)
        if isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if name.startswith("weight"):
                    for gate in param.chunk(3, dim=0):  # per gate, as the cells' Linear
                        nn.init.xavier_normal_(gate)
                else:
                    nn.init.zeros_(param)

    # ------------------------------------------------------------------ history

    def history_mask(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """[B, L] bool, True = real item (RecBole right-pads histories)."""
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        return positions.unsqueeze(0) < item_seq_len.unsqueeze(1)

    def interests(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor):
        """Interest extractor: embeddings e [B, L, D], states h [B, L, D] (0 at padding), mask [B, L]."""
        mask = self.history_mask(item_seq, item_seq_len)
        emb = self.item_embedding(item_seq) * mask.unsqueeze(-1)
        # right-padded, so real states equal packed sequences' (packing: 2.5-3x slower on a CPU)
        h, _ = self.extractor(emb)
        return emb, h * mask.unsqueeze(-1), mask

    def mlp_input(self, hist: dict, user_repr: torch.Tensor, target_ids: torch.Tensor):
        """Normalised final-MLP input [B', U + 4D] = norm([user, e_a, sum e, e_a * sum e,
        h'_T]) and the attention weights [B', L] for rows of the history summary ``hist``
        (e_sum [B', D], h [B', L, D], mask [B', L]), ``user_repr`` [B', U], targets [B']."""
        target = self.item_embedding(target_ids)
        final, weights = evolve(self.gru_type, self.evolver, self.attention, hist["h"], hist["mask"], self.query(target))
        return self.mlp_norm(self.mlp_features(user_repr, target, hist["e_sum"], final)), weights

    @staticmethod
    def mlp_features(user, target, e_sum, final) -> torch.Tensor:
        """The final MLP's input layout [..., U + 4D]: [user, e_a, sum e, e_a * sum e, h'_T]."""
        return torch.cat([user, target, e_sum, target * e_sum, final], dim=-1)

    def _logits(self, hist: dict, user_repr: torch.Tensor, target_ids: torch.Tensor):
        """Logits [B'] and attention weights [B', L]; see ``mlp_input``."""
        x, weights = self.mlp_input(hist, user_repr, target_ids)
        return self.out(self.mlp(x)).squeeze(-1), weights

    def _users(self, interaction) -> torch.Tensor:
        """User id of every row [B]; each row its own user when the data have no user ids."""
        if self.USER_ID and self.USER_ID in interaction.interaction:
            return interaction[self.USER_ID]
        return torch.arange(len(interaction[self.ITEM_SEQ_LEN]), device=interaction[self.ITEM_SEQ].device)

    @staticmethod
    def distinct_rows(user: torch.Tensor, item_seq: torch.Tensor, mask: torch.Tensor):
        """Rows with distinct (user, history): first row of each [U] and the row -> distinct
        index map [B]. RecBole's sampled negatives repeat their positive's history, and an
        evaluation batch scores many items against one history."""
        return distinct_rows(torch.cat([user.unsqueeze(1), item_seq.masked_fill(~mask, 0)], dim=1))

    def _history(self, interaction) -> tuple[dict, torch.Tensor, dict]:
        """History summary of every row, the extractor run once per distinct (user, history).

        Returns:
            hist (e_sum [B, D], h [B, L, D], mask [B, L]), user_repr [B, U] and the
            distinct rows (rows [U'], emb [U', L, D], h [U', L, D]) for the auxiliary loss.
        """
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        mask = self.history_mask(item_seq, item_seq_len)
        rows, inverse = self.distinct_rows(self._users(interaction), item_seq, mask)
        emb, h, _ = self.interests(item_seq[rows], item_seq_len[rows])
        hist = {"e_sum": emb.sum(1)[inverse], "h": h[inverse], "mask": mask}
        if self.user_embedding is None:
            user_repr = emb.new_zeros(len(item_seq), 0)
        else:
            user_repr = self.user_embedding(interaction[self.USER_ID])
        return hist, user_repr, {"rows": rows, "emb": emb, "h": h}

    def forward(self, interaction) -> torch.Tensor:
        """Logits [B] of the rows' (history, ``item_id``) pairs."""
        hist, user_repr, _ = self._history(interaction)
        return self._logits(hist, user_repr, interaction[self.ITEM_ID])[0]

    # ------------------------------------------------------------------ auxiliary loss

    def sample_aux_negatives(self, interaction, rows: torch.Tensor | None = None):
        """Negatives [R, L] and valid [R, L] for the history positions of ``rows`` (default:
        all): ``unclicked_negatives``, a clicked item being one of the user's history items in
        the batch or the target of a row with label 1; ``aux_neg_max_tries`` draws."""
        item_seq = interaction[self.ITEM_SEQ]
        mask = self.history_mask(item_seq, interaction[self.ITEM_SEQ_LEN])
        user = self._users(interaction)
        clicked = (user[:0], user[:0])
        if self.LABEL in interaction.interaction:
            pos = interaction[self.LABEL] > 0.5
            clicked = (user[pos], interaction[self.ITEM_ID][pos])
        return unclicked_negatives(user, item_seq, mask, clicked, self.n_items, self.aux_neg_max_tries, rows)

    def auxiliary_loss(self, distinct: dict, interaction) -> torch.Tensor:
        """Eq. (6-7) over the distinct histories of the batch: h_t against e_{t+1}
        (clicked) and a fresh negative, mean over the valid positions."""
        negatives, valid = self.sample_aux_negatives(interaction, distinct["rows"])
        valid = valid[:, :-1]
        h, emb = distinct["h"], distinct["emb"]
        if int(valid.sum()) < 2:  # BatchNorm needs two rows; nothing to learn from fewer
            return h.new_zeros(())
        state = h[:, :-1][valid]  # [M, D]
        pos = emb[:, 1:][valid]
        neg = self.item_embedding(negatives[:, :-1][valid])
        logits = self.aux_logit(torch.cat([state, state]), torch.cat([pos, neg]))
        labels = torch.cat([torch.ones(len(state)), torch.zeros(len(state))]).to(logits)
        # mean over positions of [-log s(pos) - log(1 - s(neg))]
        return 2.0 * F.binary_cross_entropy_with_logits(logits, labels)

    def aux_logit(self, state: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Auxiliary net: [h_t, e] [M, 2D] -> BatchNorm -> MLP -> logit [M]."""
        return self.aux_out(self.aux_net(self.aux_norm(torch.cat([state, item], -1)))).squeeze(-1)

    # ------------------------------------------------------------------ RecBole API

    def calculate_loss(self, interaction) -> torch.Tensor:
        hist, user_repr, distinct = self._history(interaction)
        logits = self._logits(hist, user_repr, interaction[self.ITEM_ID])[0]
        loss = self.loss_fct(logits, interaction[self.LABEL].float())
        if self.alpha > 0:
            loss = loss + self.alpha * self.auxiliary_loss(distinct, interaction)
        return loss

    def predict(self, interaction) -> torch.Tensor:
        """Click probability [B] of each row's (history, ``item_id``) pair."""
        return torch.sigmoid(self.forward(interaction))

    def attention_weights(self, interaction) -> torch.Tensor:
        """Attention a_t [B, L] of each row's target over its history (0 at padding).

        For ``gru_type: GRU`` these weigh the second GRU's states, otherwise the
        interest-extractor states that drive the evolving GRU."""
        hist, user_repr, _ = self._history(interaction)
        return self._logits(hist, user_repr, interaction[self.ITEM_ID])[1]

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Click probabilities of every item for each row: [B, N], ``full_sort_chunk``
        items at a time, equal to ``predict`` item by item. The interest extractor runs
        once per row; in eval mode the evolving layer shares its history side too
        (``evolve_shared``); training mode (batch statistics) evolves pair by pair."""
        hist, user_repr, _ = self._history(interaction)
        b = user_repr.shape[0]
        device = hist["h"].device
        scores = []
        for items in torch.arange(self.n_items, device=device).split(self.full_sort_chunk):
            c = items.numel()
            if self.training:
                rows = {k: v.repeat_interleave(c, dim=0) for k, v in hist.items()}
                logits, _ = self._logits(rows, user_repr.repeat_interleave(c, dim=0), items.repeat(b))
            else:
                target = self.item_embedding(items)  # [C, D]
                final = evolve_shared(self.gru_type, self.evolver, self.attention, hist["h"], hist["mask"], self.query(target))
                e_sum = hist["e_sum"].unsqueeze(1).expand(b, c, -1)
                target = target.unsqueeze(0).expand(b, c, -1)
                user = user_repr.unsqueeze(1).expand(b, c, -1)
                x = self.mlp_features(user, target, e_sum, final).reshape(b * c, -1)
                logits = self.out(self.mlp(self.mlp_norm(x))).squeeze(-1)
            scores.append(torch.sigmoid(logits).view(b, c))
        return torch.cat(scores, dim=1)
