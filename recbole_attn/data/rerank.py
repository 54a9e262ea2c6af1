"""Re-ranking lists: the top-K of a ranker's full ranking, and PRM's leak-free data split.

Protocol (DESIGN.md section 4, issue #7): the initial ranker is fitted on the training
split; the re-ranker learns from the ranker's lists at the *validation* point (history =
training items, label = validation item), with part of those users held out for early
stopping; it is tested on the ranker's lists at the *test* point (label = test item). The
ranker's training targets therefore never become re-ranker labels, and no test
interaction is read before the test evaluation.
"""

from __future__ import annotations

import numpy as np
import torch

from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader

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
    if not 0.0 <= holdout_ratio < 1.0:
        raise ConfigError(f"prm_holdout_ratio must be in [0, 1), got {holdout_ratio}")
    dataset = valid_data._dataset
    n = len(dataset)
    perm = np.random.default_rng(config["seed"]).permutation(n)
    n_hold = int(round(holdout_ratio * n))
    if holdout_ratio > 0:
        n_hold = min(max(n_hold, 1), n - 1)
    if n - n_hold < 1:
        raise ConfigError(f"no validation-point lists left to train PRM on ({n} users)")
    hold_idx = torch.as_tensor(np.sort(perm[:n_hold]), dtype=torch.long)
    train_idx = torch.as_tensor(np.sort(perm[n_hold:]), dtype=torch.long)
    train_set = dataset.copy(dataset.inter_feat[train_idx])
    train_loader = TrainDataLoader(config, train_set, None, shuffle=config["shuffle"])
    if n_hold == 0:
        return train_loader, None
    hold_set = dataset.copy(dataset.inter_feat[hold_idx])
    hold_loader = FullSortEvalDataLoader(config, hold_set, valid_data._sampler, shuffle=False)
    return train_loader, hold_loader
