"""A sequential dataset whose ``_list`` fields are gathered per batch, not held for every sample.

RecBole 1.2.1's ``SequentialDataset.data_augmentation`` turns each interaction after a
user's first into one sample (history = up to L preceding interactions of the user,
target = the interaction) and materialises every ``_list`` field as a [samples, L]
tensor before training: about 1.35 KB per interaction at L = 50 with an item and a
time field, so memory grows with interactions x L. Its Python loop over the samples
also builds one ``slice`` object per sample and one tensor copy per sample and field.

``LeanSequentialDataset`` keeps the same samples as RecBole, in the same order, with the
same scalar fields (the target interaction's fields and ``item_length``); each sample
also remembers the position of its target in the user-grouped, time-sorted interaction
table (``SampleInteraction.source``, shared by every split and copy). Its history is the
``item_length`` rows before that position, so a ``_list`` field of a batch is one gather
of [B, L] rows (``SampleInteraction.gather``) when the dataloader asks for the batch
(``Dataset.__getitem__``). Sorting, shuffling, splitting and sub-setting move the
scalar fields and positions only. Every batch equals RecBole's field by field
(tests/test_sequential_lean.py), so losses and metrics do too.

Loading: RecBole reads atomic files with pandas' Python CSV engine, which held ~350 MB
per million interactions at its peak (token columns as Python strings) and read 1M rows
in ~17 s. With a one-character ``field_separator`` (RecBole's default is a tab) the lean
dataset reads them with pandas' C engine: the same DataFrame (tests/test_sequential_lean.py),
~50 MB at the peak and ~10x faster. A longer separator (a regex) keeps the Python engine.

Models that read item ids only (``ITEM_ID_MODELS``: AttRec and RecBole's SASRec, GRU4Rec and other
id-only sequential models; the item history, its length, the user,
the target and the negative items) get batches without the other ``_list`` fields and
without the joined item and user features, which they never read: the gather of every
inter field's history and the feature joins of the positive and negative rows were most
of such a model's data pipeline. Every other model, and any run with a RecBole
``transform``, gets every field (tests/test_lean_fields.py).

Negative sampling: RecBole's sequential sampler (``RepeatableSampler``) builds one Python
set per row and checks each sampled item against it in a Python loop; ``LeanSampler``
checks them with one array comparison and draws the same random numbers in the same order,
so its negatives are RecBole's (``use_lean_sampler``, applied to the loaders of a lean
dataset).

``sequential_dataset: recbole`` keeps RecBole's own class (overall.yaml).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.sampler import RepeatableSampler

# Models whose batches are read for item ids only: their ``calculate_loss``, ``predict`` and
# ``full_sort_predict`` read ITEM_SEQ, ITEM_SEQ_LEN, POS_ITEM_ID / ITEM_ID, NEG_ITEM_ID and
# (AttRec, Caser, FPMC) USER_ID, nothing else (RecBole 1.2.1's sequential models read one by
# one; tests/test_lean_fields.py trains each on both loaders). A model not named here gets
# every field.
ITEM_ID_MODELS = frozenset({
    "AttRec", "SASRec", "GRU4Rec", "NARM", "STAMP", "Caser", "NextItNet", "SRGNN", "GCSAN",
    "LightSANs", "CORE", "FPMC", "RepeatNet",
})


def reads_item_ids_only(config) -> bool:
    """True for an ``ITEM_ID_MODELS`` model without a RecBole batch ``transform``."""
    return config["model"] in ITEM_ID_MODELS and not config["transform"]


class SampleInteraction(Interaction):
    """RecBole's ``Interaction`` of sequential samples whose ``_list`` fields are built on demand.

    Attributes:
        interaction: the scalar fields of the samples, [N] each (or [N, ...] for sequence
            and numerical features), as in RecBole's augmented ``inter_feat``.
        target: [N] int64 position of each sample's target row in ``source``.
        source: the user-grouped, time-sorted interaction columns, [M, ...] each.
        lists: ``_list`` field -> (source field, list shape after N), in RecBole's order.
        length_field: ``item_length``, the number of history rows of each sample (<= L).
    """

    def __init__(self, interaction: dict, target: torch.Tensor, source: dict, lists: dict, length_field: str):
        super().__init__(interaction)
        self.target, self.source, self.lists, self.length_field = target, source, lists, length_field

    def _like(self, interaction: dict, target: torch.Tensor) -> "SampleInteraction":
        return SampleInteraction(interaction, target, self.source, self.lists, self.length_field)

    def gather(self, list_field: str) -> torch.Tensor:
        """[N, L, ...] values of ``list_field``: row n holds the ``item_length[n]`` source rows
        before ``target[n]``, oldest first, then zeros (RecBole's layout)."""
        field, shape = self.lists[list_field]
        column = self.source[field]
        length = self.interaction[self.length_field]
        steps = torch.arange(shape[0])
        inside = steps.unsqueeze(0) < length.unsqueeze(1)  # [N, L]
        position = torch.where(inside, (self.target - length).unsqueeze(1) + steps, 0)
        values = column[position]  # [N, L, ...]
        values[~inside] = 0
        return values

    def materialize(self, lists: list[str] | None = None) -> Interaction:
        """A plain ``Interaction`` with the ``lists`` fields built (default: every ``_list``
        field), the batch of these samples."""
        data = dict(self.interaction)
        data.update({name: self.gather(name) for name in self.lists if lists is None or name in lists})
        return Interaction(data)

    # Field access: the _list fields are columns too, built when read.
    def __iter__(self):
        return iter(list(self.interaction) + list(self.lists))

    def __contains__(self, item) -> bool:
        return item in self.interaction or item in self.lists

    @property
    def columns(self) -> list:
        return list(self)

    def __getattr__(self, item):
        if item in self.__dict__.get("lists", ()):
            return self.gather(item)
        return super().__getattr__(item)

    def __getitem__(self, index):
        if isinstance(index, str):
            return self.gather(index) if index in self.lists else self.interaction[index]
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        elif isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long) if index else torch.zeros(0, dtype=torch.long)
        return self._like({k: v[index] for k, v in self.interaction.items()}, self.target[index])

    def __setitem__(self, key, value):
        if key in self.lists:
            raise KeyError(f"{key} is built from the interaction table per batch and cannot be assigned")
        super().__setitem__(key, value)

    def _reindex(self, index) -> None:
        super()._reindex(index)
        self.target = self.target[index]

    # Whole-object transforms apply to the built samples.
    def to(self, device, selected_field=None):
        return self.materialize().to(device, selected_field)

    def cpu(self):
        return self.materialize().cpu()

    def numpy(self):
        return self.materialize().numpy()

    def repeat(self, sizes):
        return self.materialize().repeat(sizes)

    def repeat_interleave(self, repeats, dim=0):
        return self.materialize().repeat_interleave(repeats, dim)

    def __str__(self) -> str:
        return f"SampleInteraction of {self.length} samples, lists {list(self.lists)} built per batch\n" + super().__str__()


def sample_positions(users: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """RecBole's augmentation loop, vectorised: the samples of user-grouped rows.

    Args:
        users: [M] user id of each row, rows of a user contiguous and time-sorted.
        max_len: L, the most history rows a sample keeps.

    Returns:
        target [S] (every row but each user's first, in row order) and item_length [S]
        (min(rows of the user before the target, L)).
    """
    first = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    counts = np.diff(np.r_[starts, len(users)])
    offset = np.arange(len(users)) - np.repeat(starts, counts)  # rows of the user before each row
    target = np.flatnonzero(offset > 0)
    return target, np.minimum(offset[target], max_len).astype(np.int64)


@contextlib.contextmanager
def c_engine_csv() -> Iterator[None]:
    """``pd.read_csv(..., engine="python")`` with a one-character delimiter runs the C engine."""
    read_csv = pd.read_csv

    def read(*args, **kwargs):
        delimiter = kwargs.get("delimiter", kwargs.get("sep"))
        if kwargs.get("engine") == "python" and isinstance(delimiter, str) and len(delimiter) == 1:
            kwargs["engine"] = "c"
        return read_csv(*args, **kwargs)

    pd.read_csv = read
    try:
        yield
    finally:
        pd.read_csv = read_csv


def leave_one_out_index(keys: np.ndarray, leave_one_num: int) -> list[np.ndarray]:
    """RecBole's ``_grouped_index`` + ``_split_index_by_leave_one_out``, vectorised.

    Args:
        keys: [N] group (user) of each row.
        leave_one_num: rows held out per group (1 or 2), the group's last ones.

    Returns:
        ``leave_one_num + 1`` index arrays: groups in order of first appearance, rows of a
        group in their order; part 0 keeps all but the last ``min(leave_one_num, n - 1)``
        rows of a group of n, and the held-out rows go, in order, to the last parts.
    """
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    order = np.argsort(rank[inverse.reshape(-1)], kind="stable")  # rows grouped, groups by first row
    group = rank[inverse.reshape(-1)][order]
    counts = np.bincount(group, minlength=len(first))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    position = np.arange(len(order)) - starts[group]
    held = np.minimum(leave_one_num, counts - 1)[group]
    kept = counts[group] - held  # rows of the group in part 0
    part = np.where(position < kept, 0, leave_one_num + 1 - held + position - kept)
    return [order[part == k] for k in range(leave_one_num + 1)]


class LeanSequentialDataset(SequentialDataset):
    """RecBole's ``SequentialDataset`` with the same samples, their ``_list`` fields built per batch."""

    def _load_feat(self, filepath: str, source):
        """RecBole's ``_load_feat`` reading with pandas' C engine where it can (``c_engine_csv``)."""
        with c_engine_csv():
            return super()._load_feat(filepath, source)

    def data_augmentation(self) -> None:
        """RecBole's samples (one per interaction after a user's first) as a ``SampleInteraction``."""
        self.logger.debug("data_augmentation (lean: _list fields built per batch)")
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        self.sort(by=[self.uid_field, self.time_field], ascending=True)
        source = self.inter_feat.interaction
        target, length = sample_positions(source[self.uid_field].numpy(), self.max_item_list_len)
        target = torch.from_numpy(target)
        samples = {field: column[target] for field, column in source.items()}
        samples[self.item_list_length_field] = torch.from_numpy(length)
        lists = {}
        for field in source:
            if field == self.uid_field:
                continue
            list_field = getattr(self, f"{field}_list_field")
            list_len = self.field2seqlen[list_field]
            lists[list_field] = (field, (list_len,) if isinstance(list_len, int) else tuple(list_len))
        self.inter_feat = SampleInteraction(samples, target, source, lists, self.item_list_length_field)

    def leave_one_out(self, group_by, leave_one_mode):
        """RecBole's ``leave_one_out`` (same parts, same row order) without its Python loops."""
        modes = {"valid_and_test": (2, [0, 1, 2]), "valid_only": (1, [0, 1, None]), "test_only": (1, [0, None, 1])}
        if group_by is None or leave_one_mode not in modes:
            return super().leave_one_out(group_by, leave_one_mode)
        num, layout = modes[leave_one_mode]
        parts = leave_one_out_index(self.inter_feat[group_by].numpy(), num)
        self._drop_unused_col()
        empty = np.zeros(0, dtype=np.int64)
        return [self.copy(self.inter_feat[torch.from_numpy(empty if k is None else parts[k])]) for k in layout]

    @property
    def batch_lists(self) -> list[str] | None:
        """The ``_list`` fields a batch holds: the item history for ``reads_item_ids_only``,
        else None (every one)."""
        return [self.iid_field + self.config["LIST_SUFFIX"]] if reads_item_ids_only(self.config) else None

    def __getitem__(self, index, join: bool = True) -> Interaction:
        """The samples at ``index`` with their ``batch_lists`` built (a batch). A copy holding
        a plain ``Interaction`` (rows concatenated from other splits, e.g. PRM's control of a
        ranker retrained on train + validation) reads its rows as RecBole's dataset does."""
        df = self.inter_feat[index]
        df = df.materialize(self.batch_lists) if isinstance(df, SampleInteraction) else df
        return self.join(df) if join else df

    def join(self, df: Interaction) -> Interaction:
        """RecBole's join of the user and item features into ``df`` (batch rows, negative
        items), skipped for a model that reads item ids only (``reads_item_ids_only``)."""
        return df if reads_item_ids_only(self.config) else super().join(df)

    def inter_matrix(self, form: str = "coo", value_field=None):
        """RecBole's ``SequentialDataset.inter_matrix``, building the lists of the rows it reads only."""
        first = self.inter_feat[self.inter_feat[self.item_list_length_field] == 1].materialize()
        suffix = self.config["LIST_SUFFIX"]
        data = {}
        for field in first.interaction:
            if field != self.uid_field and field + suffix in first.interaction:
                data[field] = torch.cat([self.inter_feat[field], first[field + suffix][:, 0]])
            elif not field.endswith(suffix) and field != self.item_list_length_field:
                data[field] = torch.cat([self.inter_feat[field], first[field]])
        return self._create_sparse_matrix(Interaction(data), self.uid_field, self.iid_field, form, value_field)


class LeanSampler(RepeatableSampler):
    """RecBole's ``RepeatableSampler`` with ``sample_by_user_ids`` vectorised, same draws."""

    def sample_by_user_ids(self, user_ids, item_ids, num):
        """[len(item_ids) * num] negatives: for each row, items drawn until one differs from the
        row's item (RecBole's ``sample_by_key_ids`` with key i's used set {item_ids[i]}):
        the same ``sampling`` calls, of the same sizes, in the same order."""
        item_ids = np.asarray(item_ids)
        if len(item_ids) < 2:  # RecBole's branches for one key, and its error paths
            return super().sample_by_user_ids(user_ids, item_ids, num)
        total = len(item_ids) * num
        value_ids = np.zeros(total, dtype=np.int64)
        used = np.tile(item_ids, num)  # [total] the positive of each draw's row
        check = np.arange(total)
        while len(check) > 0:
            value_ids[check] = self.sampling(len(check))
            check = check[value_ids[check] == used[check]]
        return torch.tensor(value_ids, dtype=torch.long)


def use_lean_sampler(loaders) -> None:
    """Give each loader whose sampler is exactly RecBole's ``RepeatableSampler`` a ``LeanSampler``."""
    for loader in loaders:
        sampler = getattr(loader, "_sampler", None)
        if type(sampler) is RepeatableSampler:
            sampler.__class__ = LeanSampler
