"""Behaviour groups of ATRank: which action each behaviour is and which group embeds it.

A behaviour's action comes from ``behavior_field`` of the interaction file: a token field
(Taobao's ``behavior_type``: pv, cart, fav, buy) whose tokens are the actions, or a float
field (a rating) whose values are mapped to actions by the closed ranges of
``rating_actions``. ``behavior_groups`` maps each group to its actions; each group gets its
own embedding tables and projection (``recbole_attn.model.behavior_encoder``).

Everything is checked against the data: every action that occurs has exactly one group,
no group is left empty, ratings fall into a range, and the time / rating fields are not
min-max normalised (the encoder reads raw seconds and raw ratings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from recbole.utils import FeatureType

from recbole_attn.errors import ConfigError


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
        if self.derived:
            self.check_ratings_covered(dataset, field)

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



def group_sizes(vocab: BehaviorVocabulary, sizes) -> list[int]:
    """E_g per group from ``group_embedding_size``: a dict group -> size (or an int / a list).

    With ``single_group`` the one group 'all' takes sizes['all'] if given, else the size
    of the configured group that holds ``target_action``.

    Raises:
        ConfigError: a group without a size, or a value of another shape.
    """
    groups = vocab.groups
    if isinstance(sizes, int) and not isinstance(sizes, bool):
        return [sizes] * len(groups)
    if isinstance(sizes, Mapping):
        sizes = {str(k): v for k, v in sizes.items()}
        if groups == ["all"] and "all" not in sizes:
            home = vocab.configured_group_of(vocab.actions[vocab.target_action - 1])
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
