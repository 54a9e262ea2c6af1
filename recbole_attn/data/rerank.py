"""Re-ranking lists: the top-K of a ranker's full ranking, and PRM's leak-free data split.

Protocol (DESIGN.md section 4, issue #7): the initial ranker is fitted on the training
split; the re-ranker learns from the ranker's lists at the *validation* point (history =
training items, label = validation item), with part of those users held out for early
stopping; it is tested on the ranker's lists at the *test* point (label = test item). The
ranker's training targets therefore never become re-ranker labels, and no test
interaction is read before the test evaluation.

The re-ranker so reads one interaction per user (the validation item) that its ranker
never trained on; the control for that is the ranker retrained on its training rows plus
the same validation-point rows, early-stopped on the same held-out users
(``train_and_validation_loaders``): a re-ranker that only beats the initial list by the
extra interaction does not beat the control.
"""

from __future__ import annotations

import numpy as np
import torch

from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.data.interaction import Interaction, cat_interactions

from recbole_attn.errors import ConfigError


def topk_lists(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The K best real items per row of a full ranking; item 0 (padding) is never a candidate.

    Args:
        scores: [B, N] scores of all item ids, column 0 being the padding id.
        k: list length, at most N - 1.

    Returns:
        items [B, K] (ids >= 1, best first) and their scores [B, K].
    """
    if k > scores.size(1) - 1:
        raise ConfigError(f"list_length={k} exceeds the {scores.size(1) - 1} items of the dataset")
    list_scores, index = scores[:, 1:].topk(k, dim=1)  # column j of scores[:, 1:] is item j + 1
    return index + 1, list_scores


def _split_users(config, n: int, holdout_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, held-out rows) of ``n`` validation-point rows, split by a permutation
    seeded with ``config['seed']`` (the same split for every caller of one run)."""
    if not 0.0 <= holdout_ratio < 1.0:
        raise ConfigError(f"prm_holdout_ratio must be in [0, 1), got {holdout_ratio}")
    perm = np.random.default_rng(config["seed"]).permutation(n)
    n_hold = int(round(holdout_ratio * n))
    if holdout_ratio > 0:
        n_hold = min(max(n_hold, 1), n - 1)
    if n - n_hold < 1:
        raise ConfigError(f"no validation-point lists left to train PRM on ({n} users)")
    hold_idx = torch.as_tensor(np.sort(perm[:n_hold]), dtype=torch.long)
    train_idx = torch.as_tensor(np.sort(perm[n_hold:]), dtype=torch.long)
    return train_idx, hold_idx


def _holdout_loader(config, valid_data, hold_idx: torch.Tensor):
    if len(hold_idx) == 0:
        return None
    dataset = valid_data._dataset
    hold_set = dataset.copy(dataset.inter_feat[hold_idx])
    return FullSortEvalDataLoader(config, hold_set, valid_data._sampler, shuffle=False)


def validation_point_loaders(config, valid_data, holdout_ratio: float):
    """Split the validation-point rows by user into PRM's training and early-stopping loaders.

    Args:
        config: the run's config (batch sizes, seed).
        valid_data: RecBole's validation ``FullSortEvalDataLoader`` of a sequential dataset
            (one row per user: history = training items, ``item_id`` = validation item).
        holdout_ratio: share of users held out for early stopping, in [0, 1).

    Returns:
        ``(train_loader, holdout_loader)``: a shuffling ``TrainDataLoader`` over the
        training users' rows and a ``FullSortEvalDataLoader`` over the held-out users'
        rows (``None`` when ``holdout_ratio`` is 0). The users are split by a permutation
        seeded with ``config['seed']``.
    """
    dataset = valid_data._dataset
    train_idx, hold_idx = _split_users(config, len(dataset), holdout_ratio)
    train_set = dataset.copy(dataset.inter_feat[train_idx])
    train_loader = TrainDataLoader(config, train_set, None, shuffle=config["shuffle"])
    return train_loader, _holdout_loader(config, valid_data, hold_idx)


def train_and_validation_loaders(config, train_data, valid_data, holdout_ratio: float):
    """The re-ranker's control: a ranker's training rows plus the validation-point rows
    the re-ranker learns from, and the same held-out users for early stopping.

    A re-ranker trained by ``validation_point_loaders`` reads one interaction per user
    (the validation item) that its ranker never trained on. Retrained on these loaders,
    the ranker reads exactly the same data: its own training rows, the validation-point
    rows of the re-ranker's training users (history = training items, label = validation
    item: the training row the ranker would have had for that item), and early stopping on
    the re-ranker's held-out users (same ``config['seed']`` and ``holdout_ratio``, same split).

    Args:
        config: the ranker's config (its batch size, seed and shuffling).
        train_data: the ranker's RecBole training loader (its sampler is kept, for rankers
            trained with sampled negatives).
        valid_data: RecBole's validation ``FullSortEvalDataLoader`` of the same split.
        holdout_ratio: the re-ranker's ``prm_holdout_ratio``, in [0, 1).

    Returns:
        ``(train_loader, holdout_loader)``: a shuffling ``TrainDataLoader`` over
        ``len(train_data.dataset)`` + the training users' validation rows, and the held-out
        users' ``FullSortEvalDataLoader`` (``None`` when ``holdout_ratio`` is 0).
    """
    dataset = valid_data._dataset
    train_idx, hold_idx = _split_users(config, len(dataset), holdout_ratio)
    own = train_data._dataset
    missing = sorted(set(own.inter_feat.columns) - set(dataset.inter_feat.columns))
    if missing:
        raise ConfigError(f"the validation rows lack the training rows' fields {missing}: "
                          "train + validation needs a sequential dataset split leave-one-out (eval_args split LS)")
    rows = dataset.inter_feat[train_idx]
    rows = Interaction({k: rows[k] for k in own.inter_feat.columns})
    combined = own.copy(cat_interactions([own.inter_feat, rows]))
    train_loader = TrainDataLoader(config, combined, train_data._sampler, shuffle=config["shuffle"])
    return train_loader, _holdout_loader(config, valid_data, hold_idx)
