"""Data that cannot train or test a model, reported before training with the file and field.

- ``check_atomic_files`` (from ``Config``, before anything is loaded): an empty ``.inter``
  file, a header that is not ``name:type`` columns, a header with no rows, pre-split
  (``benchmark_filename``) files of a sequential model without their item list field.
- ``check_loaded`` (from ``create_dataset``, once loaded): inf or NaN left in a float
  field (RecBole fills missing floats with the field's mean, but not inf), items or
  users of the valid/test files that the training file never has.
- ``data_preparation``: RecBole's, with an empty split (``num_samples=0``) explained.
"""

from __future__ import annotations

import numpy as np

from recbole.utils import FeatureType, ModelType

from recbole_attn.errors import ConfigError

FEATURE_TYPES = {t.value for t in FeatureType}


def _header(path: str, separator: str) -> list[str]:
    """The ``name:type`` columns of an atomic file, checked; the file must have a data row."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n")
        has_row = any(line.strip() for line in (f.readline(), f.readline()))
    if not header.strip():
        raise ConfigError(
            f"atomic file {path} is empty: it needs a header of name:type columns "
            f"(e.g. user_id:token{separator!r}item_id:token) and one interaction per line"
        )
    columns = header.split(separator)
    for column in columns:
        name, _, kind = column.partition(":")
        if not name or kind not in FEATURE_TYPES:
            raise ConfigError(
                f"column {column!r} in the header of {path} is not name:type with type one of "
                f"{', '.join(sorted(FEATURE_TYPES))} (field_separator={separator!r})"
            )
    if not has_row:
        raise ConfigError(f"atomic file {path} has a header but no interactions: nothing to train or test on")
    return [c.partition(":")[0] for c in columns]


def check_atomic_files(config: dict, inter_files: list) -> None:
    """Check the headers of the ``.inter`` files before RecBole loads them."""
    separator = config["field_separator"] or "\t"
    list_field = f"{config['ITEM_ID_FIELD']}{config['LIST_SUFFIX']}"
    for path in map(str, inter_files):
        names = _header(path, separator)
        if (
            config["benchmark_filename"]
            and config["MODEL_TYPE"] == ModelType.SEQUENTIAL
            and list_field not in names
        ):
            raise ConfigError(
                f"{path} has no {list_field} column: with benchmark_filename a sequential model reads "
                f"each row's history from {list_field}:token_seq (and its target from "
                f"{config['ITEM_ID_FIELD']}); add the column, or drop benchmark_filename to let "
                "RecBole split one .inter file"
            )


def _non_finite(dataset) -> None:
    for source, feat in (("inter", dataset.inter_feat), ("item", dataset.item_feat), ("user", dataset.user_feat)):
        if feat is None:
            continue
        for field in feat:
            if dataset.field2type.get(field) not in (FeatureType.FLOAT, FeatureType.FLOAT_SEQ):
                continue
            values = feat[field]
            if dataset.field2type[field] == FeatureType.FLOAT_SEQ:
                bad = np.array([not np.all(np.isfinite(np.asarray(v, dtype=float))) for v in values])
            else:
                bad = ~np.isfinite(np.asarray(values, dtype=float))
            if bad.any():
                raise ConfigError(
                    f"float field '{field}' of {dataset.dataset_name}.{source} has {int(bad.sum())} inf or NaN "
                    f"value(s) (first in row {int(np.flatnonzero(bad)[0]) + 1}): training on them gives a NaN "
                    f"loss. Fix the values, or leave the field out of load_col"
                )


def _unseen_ids(dataset) -> None:
    names = dataset.config["benchmark_filename"]
    if not names or len(names) < 2:
        return
    sizes = np.cumsum([0, *dataset.file_size_list])
    fields = [dataset.iid_field]
    if dataset.config["MODEL_TYPE"] != ModelType.SEQUENTIAL:  # sequential test users may be new sessions
        fields.append(dataset.uid_field)
    for field in fields:
        if field is None or field not in dataset.inter_feat:
            continue
        column = np.asarray(dataset.inter_feat[field])
        seen = set(column[sizes[0] : sizes[1]].tolist())
        history = f"{field}{dataset.config['LIST_SUFFIX']}"
        if field == dataset.iid_field and history in dataset.inter_feat:  # items read as history are trained too
            for items in dataset.inter_feat[history].iloc[sizes[0] : sizes[1]]:
                seen.update(np.asarray(items).tolist())
        for name, start, end in zip(names[1:], sizes[1:-1], sizes[2:]):
            unseen = sorted({v for v in column[start:end].tolist() if v not in seen})
            if unseen:
                raise ConfigError(
                    f"{len(unseen)} {field} value(s) of {dataset.dataset_name}.{name}.inter never occur in "
                    f"{dataset.dataset_name}.{names[0]}.inter (e.g. {', '.join(map(str, unseen[:5]))}): the "
                    f"model has no trained embedding for them. Remove those rows or move their "
                    f"interactions into the training file"
                )


def check_loaded(dataset) -> None:
    """Check a dataset RecBole has loaded (``inter_feat`` still a DataFrame), before its split."""
    _non_finite(dataset)
    _unseen_ids(dataset)


def data_preparation(config, dataset):
    """RecBole's ``data_preparation``; an empty split is a ``ConfigError`` naming the dataset.
    A lean dataset's loaders sample negatives with ``LeanSampler`` (RecBole's draws)."""
    from recbole.data import data_preparation as recbole_data_preparation

    from recbole_attn.data.lean import LeanSequentialDataset, use_lean_sampler

    try:
        loaders = recbole_data_preparation(config, dataset)
    except ValueError as err:
        if "num_samples=0" not in str(err):
            raise
        raise ConfigError(
            f"the training split of dataset '{config['dataset']}' is empty ({dataset.inter_num} interactions of "
            f"{dataset.user_num - 1} users, eval_args split {config['eval_args']['split']}): every user has too few "
            "interactions to give training rows (a sequential model with leave-one-out needs at least 4 per user, "
            "a general model at least 3). Filter such users (user_inter_num_interval) or add data"
        ) from err
    if isinstance(dataset, LeanSequentialDataset):
        use_lean_sampler(loaders)  # the same negatives, without RecBole's per-row Python loop
    return loaders
