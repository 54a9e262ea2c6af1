"""Side-information encoders of a sequence: position, item fields and behaviour fields.

``SideFeatures`` turns a [B, L] item sequence (plus the behaviour values of each
position) into m side embeddings [B, L, H], one per side field, for a fusion function
such as NOVA's. Item fields are columns of the ``.item`` file looked up by item id;
behaviour fields are interaction columns whose ``<field>_list`` sequence RecBole builds.

Encodings: token -> embedding; item token_seq -> mean of its non-padding tokens'
embeddings; float -> linear map of the value standardised by the mean and std of its
training values (item floats: over all items), or for behaviour floats with ``bucket``
the embedding of its quantile bucket over the training values. Hidden values (masked
positions, padding, the mask token) read index 0 / value 0: an "unknown" embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole.utils import FeatureType

from recbole_attn.errors import ConfigError

FLOAT_ENCODINGS = ("bucket", "linear")
ITEM_FIELD_TYPES = {
    FeatureType.TOKEN: "token",
    FeatureType.TOKEN_SEQ: "token_seq",
    FeatureType.FLOAT: "float",
}
BEHAVIOR_FIELD_TYPES = {FeatureType.TOKEN: "token", FeatureType.FLOAT: "float"}
POSITION = "position"  # the name of the position side field in ``fields_used``


def standardiser(values: torch.Tensor) -> torch.Tensor:
    """[mean, std] of ``values`` (std 1 where it is 0 or undefined): [2]."""
    if values.numel() == 0:
        return torch.tensor([0.0, 1.0])
    mean = values.double().mean()
    std = values.double().std() if values.numel() > 1 else torch.tensor(0.0)
    std = std if torch.isfinite(std) and std > 0 else torch.tensor(1.0)
    return torch.stack([mean, std.double()]).float()


def bucket_boundaries(values: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """Distinct quantile boundaries, at most ``num_buckets`` buckets: [<= num_buckets-1]."""
    if num_buckets == 1 or values.numel() == 0:
        return values.new_zeros(0)
    q = torch.linspace(0, 1, num_buckets + 1, dtype=torch.float64)[1:-1]
    sample = values.double()
    if sample.numel() > 1_000_000:  # torch.quantile's input limit is 16M; a sample suffices
        sample = sample[torch.randperm(sample.numel())[:1_000_000]]
    return torch.unique(torch.quantile(sample, q)).float()


def item_side_fields(dataset, fields: list[str] | None, owner: str) -> dict[str, str]:
    """Validated item side fields: name -> 'token' | 'token_seq' | 'float'.

    ``fields=None``: every loaded item feature of a supported type.
    """
    item_id = dataset.iid_field
    item_feat = dataset.item_feat
    available = [] if item_feat is None else [f for f in item_feat.columns if f != item_id]
    if fields is None:
        return {
            f: ITEM_FIELD_TYPES[dataset.field2type[f]]
            for f in available
            if dataset.field2type[f] in ITEM_FIELD_TYPES
        }
    out = {}
    for field in fields:
        if field not in available:
            loaded = ", ".join(available) if available else "none (no .item columns loaded)"
            raise ConfigError(
                f"item_side_fields: field '{field}' is not an item feature of dataset "
                f"'{dataset.dataset_name}'. Available item fields: {loaded}. Load it with "
                f"load_col: {{item: [{item_id}, {field}, ...]}} if the .item file has it, "
                "or remove it from item_side_fields (~ = every loaded item feature)."
            )
        ftype = dataset.field2type[field]
        if ftype not in ITEM_FIELD_TYPES:
            raise ConfigError(
                f"item_side_fields: field '{field}' has type {ftype.value}, which {owner} "
                f"cannot embed (supported: {', '.join(ITEM_FIELD_TYPES.values())}). "
                f"Available item fields: {', '.join(available)}."
            )
        out[field] = ITEM_FIELD_TYPES[ftype]
    return out


def behavior_side_fields(dataset, fields: list[str], list_suffix: str, owner: str) -> dict:
    """Validated behaviour side fields (interaction fields with a ``_list``): name -> kind."""
    excluded = {dataset.iid_field, dataset.uid_field}
    available = [
        f for f in dataset.field2type if f + list_suffix in dataset.field2type and f not in excluded
    ]
    out = {}
    for field in fields:
        if field not in available:
            raise ConfigError(
                f"behavior_side_fields: field '{field}' is not an interaction field with a "
                f"'{list_suffix}' sequence in dataset '{dataset.dataset_name}'. Available "
                f"behaviour fields: {', '.join(available) or 'none'}. (Item fields go in "
                "item_side_fields; position is use_position; load interaction columns with "
                "load_col: {inter: [...]}.)"
            )
        ftype = dataset.field2type[field]
        if ftype not in BEHAVIOR_FIELD_TYPES:
            raise ConfigError(
                f"behavior_side_fields: field '{field}' has type {ftype.value}, which {owner} "
                f"cannot embed (supported: {', '.join(BEHAVIOR_FIELD_TYPES.values())}). "
                f"Available behaviour fields: {', '.join(available)}."
            )
        out[field] = BEHAVIOR_FIELD_TYPES[ftype]
    return out


class SideFeatures(nn.Module):
    """Side embeddings of a sequence: position first, then item fields, then behaviour fields.

    Args:
        dataset: RecBole dataset (item features, interaction fields, their types).
        hidden_size: H.
        max_len: L, positions of the position embedding.
        n_items: N (padding id 0 included); item id N is the mask token, which has no
            item features.
        item_fields, behavior_fields: from ``item_side_fields``, ``behavior_side_fields``.
        use_position: learned position embedding as the first side field.
        float_encoding: behaviour floats, ``bucket`` or ``linear``.
        num_buckets: quantile buckets per float behaviour field.
        layer_norm_eps: epsilon of a LayerNorm per side embedding (None: no LayerNorm);
            linear encodings of floats are left out (LayerNorm of w x + b keeps little
            more than the sign of x).

    ``fields_used``: {"item": [...], "behavior": [...]} (position listed as behaviour).
    """

    def __init__(
        self,
        dataset,
        hidden_size: int,
        max_len: int,
        n_items: int,
        item_fields: dict[str, str],
        behavior_fields: dict[str, str],
        use_position: bool,
        float_encoding: str,
        num_buckets: int,
        layer_norm_eps: float | None,
    ):
        super().__init__()
        h = hidden_size
        self.item_fields, self.behavior_fields = item_fields, behavior_fields
        self.float_encoding = float_encoding
        self.position_embedding = nn.Embedding(max_len, h) if use_position else None
        self.item_side = nn.ModuleDict()
        for field, kind in item_fields.items():
            self._register_item_table(dataset, field, kind, n_items)
            if kind == "float":
                self.item_side[field] = nn.Linear(1, h)
            else:
                self.item_side[field] = nn.Embedding(dataset.num(field), h, padding_idx=0)
        self.behavior_side = nn.ModuleDict()
        for field, kind in behavior_fields.items():
            values = dataset.inter_feat[field].float()
            if kind == "token":
                self.behavior_side[field] = nn.Embedding(dataset.num(field), h, padding_idx=0)
            elif float_encoding == "bucket":
                bounds = bucket_boundaries(values, num_buckets)
                self.register_buffer(f"bounds_{field}", bounds, persistent=False)
                self.behavior_side[field] = nn.Embedding(len(bounds) + 2, h, padding_idx=0)
            else:
                self.register_buffer(f"scale_{field}", standardiser(values), persistent=False)
                self.behavior_side[field] = nn.Linear(1, h)
        positions = [POSITION] if use_position else []
        self.fields_used = {
            "item": list(item_fields),
            "behavior": positions + list(behavior_fields),
        }
        self.n_sides = len(positions) + len(item_fields) + len(behavior_fields)
        # A LayerNorm per looked-up side (an affine map of one float, LN'd, would keep
        # only its sign: linear floats enter as they are).
        linear = [False] * len(positions) + [k == "float" for k in item_fields.values()]
        linear += [k == "float" and float_encoding == "linear" for k in behavior_fields.values()]
        self.norms = (
            nn.ModuleList(
                nn.Identity() if lin else nn.LayerNorm(h, eps=layer_norm_eps) for lin in linear
            )
            if layer_norm_eps is not None
            else None
        )
        self.register_buffer("positions", torch.arange(max_len), persistent=False)

    def _register_item_table(self, dataset, field: str, kind: str, n_items: int) -> None:
        """Buffer ``item_<field>``: the field's value per item id, [N+1] or [N+1, S].

        Row 0 (padding) and row N (mask token) carry no information: token id 0, or an
        ``item_known_<field>`` flag False for floats.
        """
        values = dataset.get_item_feature()[field]
        if values.shape[0] != n_items:
            raise ConfigError(
                f"item_side_fields: field '{field}' has {values.shape[0]} rows, expected one per "
                f"item ({n_items})"
            )
        pad = values.new_zeros((1,) + tuple(values.shape[1:]))
        table = torch.cat([values, pad], dim=0)
        if kind == "float":
            known = torch.ones(n_items + 1, dtype=torch.bool)
            known[0] = known[n_items] = False
            self.register_buffer(f"item_known_{field}", known, persistent=False)
            table = table.float()
            mean, std = standardiser(table[known])
            table = torch.where(known, (table - mean) / std, torch.zeros_like(table))
        else:
            table = table.long()
            table[0] = 0
        self.register_buffer(f"item_{field}", table, persistent=False)

    def _item_embedding(self, field: str, kind: str) -> torch.Tensor:
        """The field's embedding of every item id: [N+1, H]."""
        table, emb = getattr(self, f"item_{field}"), self.item_side[field]
        if kind == "token":
            return emb(table)
        if kind == "token_seq":
            weight = (table > 0).unsqueeze(-1).to(emb.weight.dtype)  # [N+1, S, 1]
            return (emb(table) * weight).sum(1) / weight.sum(1).clamp(min=1.0)
        known = getattr(self, f"item_known_{field}").unsqueeze(-1)  # [N+1, 1]
        return emb(table.unsqueeze(-1)) * known

    def _behavior_embedding(
        self, field: str, kind: str, values: torch.Tensor, visible: torch.Tensor
    ) -> torch.Tensor:
        """[B, L] values of a behaviour field -> [B, L, H]; hidden where not ``visible``."""
        emb = self.behavior_side[field]
        if kind == "token":
            return emb(values.long().masked_fill(~visible, 0))
        if self.float_encoding == "bucket":
            bounds = getattr(self, f"bounds_{field}")
            bucket = torch.bucketize(values.float(), bounds, right=True) + 1  # 0 = unknown
            return emb(bucket.masked_fill(~visible, 0))
        mean, std = getattr(self, f"scale_{field}")
        scaled = ((values.float() - mean) / std).unsqueeze(-1)  # [B, L, 1]
        return emb(scaled) * visible.unsqueeze(-1)

    def forward(
        self, item_seq: torch.Tensor, behavior: dict[str, torch.Tensor], visible: torch.Tensor
    ) -> list[torch.Tensor]:
        """Side embeddings of a sequence.

        Args:
            item_seq: [B, L] item ids, mask token N, padding 0.
            behavior: field -> [B, L] values of each behaviour field.
            visible: [B, L] bool, True = real, unmasked item whose behaviour values are shown.

        Returns:
            m x [B, L, H], LayerNorm'd (but linear floats) when ``layer_norm_eps`` was given.
        """
        sides = []
        if self.position_embedding is not None:
            pos = self.position_embedding(self.positions[: item_seq.shape[1]])  # [L, H]
            sides.append(pos.unsqueeze(0).expand(item_seq.shape[0], -1, -1))
        for field, kind in self.item_fields.items():
            sides.append(F.embedding(item_seq, self._item_embedding(field, kind)))
        for field, kind in self.behavior_fields.items():
            sides.append(self._behavior_embedding(field, kind, behavior[field], visible))
        if self.norms is not None:
            sides = [norm(side) for norm, side in zip(self.norms, sides)]
        return sides
