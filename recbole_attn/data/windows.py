"""BERT4Rec's training samples: sliding windows over each user's training sequence.

RecBole's sequential pipeline trains on one sample per prefix of a user's training
sequence (``SequentialDataset.data_augmentation``): a user with m+1 training items gives
m rows. BERT4Rec's reference data generator (``gen_data_fin.py`` in the authors' code)
instead cuts each user's training sequence of n items into windows of at most L items:
one window when n <= L, else windows ending at the last item and every ``step`` items
before it while the window still starts after the first item, plus the window of the
first L items (``step = int(prop_sliding_window * L)``, default proportion 0.1). The
cloze task masks items inside each window, so these few windows carry every training
item and an epoch costs a fraction of RecBole's prefixes.

A cloze model (NOVABERT, AttnBERT4Rec) turns a RecBole row (history ending at item e-1,
target e) into the window of the L most recent items ending at e, so keeping the rows
whose target ends one of BERT4Rec's windows gives exactly those windows, on the same
split (validation and test rows are untouched). ``train_samples: window`` selects this;
the default ``prefix`` keeps RecBole's rows, the training data of RecBole's baselines.
"""

from __future__ import annotations

import os

import numpy as np
import torch

import recbole.data.dataset as recbole_datasets
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data.dataset import SequentialDataset
from recbole.utils import ModelType

from recbole_attn.config import get_model
from recbole_attn.data.checks import check_loaded
from recbole_attn.data.lean import LeanSequentialDataset
from recbole_attn.errors import ConfigError

TRAIN_SAMPLES = ("prefix", "window")


def window_rows(users: np.ndarray, max_len: int, step: int) -> np.ndarray:
    """Indices of the prefix rows whose target ends one of BERT4Rec's windows.

    Args:
        users: [R] user id of each training row; a user's rows are in time order
            (row r of a user has history items 0..r and target item r+1).
        max_len: L, items per window.
        step: distance between the ends of consecutive windows (>= 1).

    Returns:
        [K] sorted row indices: for a user with rows r = 0..m-1 (targets e = r+1 = 1..m),
        the rows with e = m, with e > L-1 and (m - e) divisible by ``step``, and e = L-1.
    """
    order = np.argsort(users, kind="stable")
    grouped = users[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    end = np.arange(len(users)) - np.repeat(starts, counts) + 1  # e of each sorted row
    last = np.repeat(counts, counts)  # m of the row's user
    keep = (end == last) | (end == max_len - 1) | ((end > max_len - 1) & ((last - end) % step == 0))
    return np.sort(order[keep])


def window_step(config) -> int:
    """``int(sliding_window * L)`` (at least 1), checking ``sliding_window``."""
    proportion = config["sliding_window"]
    if not isinstance(proportion, (int, float)) or not 0.0 < proportion <= 1.0:
        raise ConfigError(
            f"sliding_window must be a number in (0, 1] (BERT4Rec's prop_sliding_window, "
            f"0.1 in its code), got {proportion!r}"
        )
    return max(1, int(proportion * config["MAX_ITEM_LIST_LENGTH"]))


class WindowSequentialDataset(SequentialDataset):
    """RecBole's ``SequentialDataset`` whose training split keeps BERT4Rec's windows only."""

    def build(self) -> list:
        datasets = super().build()
        train = datasets[0]
        users = train.inter_feat[self.uid_field].numpy()
        rows = window_rows(users, self.config["MAX_ITEM_LIST_LENGTH"], window_step(self.config))
        self.logger.info(
            f"train_samples=window: {len(rows)} of {len(users)} training prefixes are "
            f"BERT4Rec windows"
        )
        train.inter_feat = train.inter_feat[torch.from_numpy(rows)]
        return datasets


class LeanWindowSequentialDataset(WindowSequentialDataset, LeanSequentialDataset):
    """``WindowSequentialDataset`` with ``_list`` fields built per batch (``sequential_dataset: lean``)."""


SEQUENTIAL_DATASETS = ("lean", "recbole")


def use_lean(config) -> bool:
    """``sequential_dataset: lean`` where RecBole would build its plain ``SequentialDataset``:
    a sequential model without a dataset class of its own, on data RecBole splits itself,
    with no saved dataset to load or write."""
    kind = config["sequential_dataset"] or "lean"
    if kind not in SEQUENTIAL_DATASETS:
        raise ConfigError(f"sequential_dataset must be one of {', '.join(SEQUENTIAL_DATASETS)}, got {kind!r}")
    saved = os.path.join(config["checkpoint_dir"], f"{config['dataset']}-SequentialDataset.pth")
    return (
        kind == "lean"
        and config["MODEL_TYPE"] == ModelType.SEQUENTIAL
        and not hasattr(recbole_datasets, f"{config['model']}Dataset")
        and not config["benchmark_filename"]
        and not config["save_dataset"]
        and not config["dataset_save_path"]
        and not os.path.exists(saved)
    )


def create_dataset(config):
    """RecBole's ``create_dataset``, or ``WindowSequentialDataset`` for ``train_samples: window``,
    each lean (``LeanSequentialDataset``) where ``use_lean``; checked by
    ``recbole_attn.data.checks.check_loaded``."""
    dataset = _create_dataset(config)
    check_loaded(dataset)
    return dataset


def _create_dataset(config):
    mode = config["train_samples"] or "prefix"
    if mode not in TRAIN_SAMPLES:
        raise ConfigError(f"train_samples must be one of {', '.join(TRAIN_SAMPLES)}, got {mode!r}")
    lean = use_lean(config)
    if mode == "prefix":
        return LeanSequentialDataset(config) if lean else recbole_create_dataset(config)
    if not getattr(get_model(config["model"]), "trains_on_windows", False):
        raise ConfigError(
            f"train_samples: window is for the cloze models (NOVABERT, AttnBERT4Rec), not "
            f"{config['model']}: remove the option or set it to prefix"
        )
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL or config["benchmark_filename"]:
        raise ConfigError(
            "train_samples: window needs a sequential model on a dataset RecBole splits "
            "itself (no benchmark_filename)"
        )
    window_step(config)
    return LeanWindowSequentialDataset(config) if lean else WindowSequentialDataset(config)
