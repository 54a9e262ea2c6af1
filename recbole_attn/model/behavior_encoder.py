"""ATRank's behaviour encoder: (object, action, time) -> one vector of the shared space.

Each behaviour group g (``recbole_attn.model.behavior_groups``) has its own object
embedding o = [item id (+) item features] of width d_g = E_g * (1 + item fields) and its
own dense projection M_g into the shared space of width H:

- ``time_encoding: concat`` (reference code, ``concat_time_emb=True``):
  s = M_g [o ; onehot(a) ; onehot(bucket)]  (the reference has no actions, so the action
  joins the concatenation the way its time bucket does).
- ``time_encoding: sum`` (paper, "raw feature spaces"):
  s = M_g (o + emb^a_g(a) + emb^t_g(bucket)).

``use_time: False`` drops the time part in both. Targets: ``raw`` (reference) is the
object embedding of the target group, mapped to H by a bias-free linear layer only when
d_g != H (the reference's 64 + 64 = H = 128 needs none); ``projected`` (paper) embeds the
target like a behaviour with ``target_action`` and time bucket 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recbole_attn.layers import ItemFeatureEmbedding
from recbole_attn.model.behavior_groups import BehaviorVocabulary

TIME_ENCODINGS = ("concat", "sum")
TARGET_EMBEDDINGS = ("raw", "projected")


class BehaviorEncoder(nn.Module):
    """Per-group embedding and projection of behaviours, and the target vector.

    Args:
        dataset: the RecBole dataset (item features are read from it).
        vocab: actions and groups, checked against the data.
        sizes: E_g per group.
        item_fields: item features embedded with the id (None = every loaded one).
        hidden_size: H.
        time_buckets: number of time buckets.
        use_time: encode the time bucket.
        time_encoding: ``concat`` or ``sum`` (see the module docstring).
        target_embedding: ``raw`` or ``projected``.
    """

    def __init__(
        self,
        dataset,
        vocab: BehaviorVocabulary,
        sizes: Sequence[int],
        item_fields: Sequence[str] | None,
        hidden_size: int,
        time_buckets: int,
        use_time: bool,
        time_encoding: str,
        target_embedding: str,
    ):
        super().__init__()
        self.hidden_size, self.time_buckets, self.use_time = hidden_size, time_buckets, use_time
        self.concat, self.raw_target = time_encoding == "concat", target_embedding == "raw"
        self.n_actions = len(vocab.actions)
        self.derived = vocab.derived
        self.target_action = vocab.target_action
        self.target_group = vocab.group_of[vocab.target_action]
        self.register_buffer("group_of", torch.tensor(vocab.group_of), persistent=False)
        lo, hi = zip(*vocab.rating_ranges) if vocab.derived else ((), ())
        self.register_buffer("rating_low", torch.tensor(lo, dtype=torch.float), persistent=False)
        self.register_buffer("rating_high", torch.tensor(hi, dtype=torch.float), persistent=False)
        self.object_embedding = nn.ModuleList(ItemFeatureEmbedding(dataset, e, item_fields) for e in sizes)
        self.time_embedding, self.action_embedding = nn.ModuleList(), nn.ModuleList()
        self.projection = nn.ModuleList()
        for obj in self.object_embedding:
            width = obj.out_dim
            if self.concat:
                width += self.n_actions + (time_buckets if use_time else 0)
            else:
                self.action_embedding.append(nn.Embedding(self.n_actions + 1, obj.out_dim, padding_idx=0))
                if use_time:
                    self.time_embedding.append(nn.Embedding(time_buckets, obj.out_dim))
            self.projection.append(nn.Linear(width, hidden_size))
        target_dim = self.object_embedding[self.target_group].out_dim
        self.target_map = (
            nn.Linear(target_dim, hidden_size, bias=False)
            if self.raw_target and target_dim != hidden_size
            else nn.Identity()
        )

    def actions_of(self, values: torch.Tensor) -> torch.Tensor:
        """Action index (0 = none) of behaviour-field values: token ids or ratings [...] -> [...]."""
        if not self.derived:
            return values.long()
        v = values.float().unsqueeze(-1)
        inside = (v >= self.rating_low) & (v <= self.rating_high)  # [..., A]
        none = torch.zeros_like(values, dtype=torch.long)
        return torch.where(inside.any(-1), inside.float().argmax(-1) + 1, none)

    def layout(self, g: int, items: torch.Tensor, actions: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        """Input of group g's projection M_g: [...] x3 -> [..., width of M_g]."""
        o = self.object_embedding[g](items)
        if self.concat:
            parts = [o, F.one_hot(actions - 1, self.n_actions).to(o.dtype)]
            if self.use_time:
                parts.append(F.one_hot(buckets, self.time_buckets).to(o.dtype))
            return torch.cat(parts, -1)
        o = o + self.action_embedding[g](actions)
        return o + self.time_embedding[g](buckets) if self.use_time else o

    def embed_group(self, g: int, items, actions, buckets) -> torch.Tensor:
        """s = M_g(layout): items, actions, buckets [...] -> [..., H]."""
        return self.projection[g](self.layout(g, items, actions, buckets))

    def forward(self, items, actions, buckets, mask) -> torch.Tensor:
        """S: items, actions, buckets, mask [B, L] -> [B, L, H].

        Each real behaviour goes through its own group's tables and projection; padding is 0.
        """
        groups = torch.where(mask, self.group_of[actions], torch.full_like(actions, -1))
        s = items.new_zeros(items.shape + (self.hidden_size,), dtype=torch.float)
        for g in range(len(self.projection)):
            where = (groups == g).nonzero(as_tuple=True)
            s = s.index_put(where, self.embed_group(g, items[where], actions[where], buckets[where]))
        return s

    def target(self, items: torch.Tensor) -> torch.Tensor:
        """h_t of target items: [...] -> [..., H]."""
        if self.raw_target:
            return self.target_map(self.object_embedding[self.target_group](items))
        actions = torch.full_like(items, self.target_action)
        return self.embed_group(self.target_group, items, actions, torch.zeros_like(items))
