"""Epoch timing for benchmarks. Imports only torch, so a baseline process can load this
file by path without importing (and so patching RecBole through) ``recbole_attn``."""

from __future__ import annotations

import time

import torch


def time_epochs(trainer, before: list[float] | None = None) -> list[float]:
    """Wrap ``trainer._train_epoch`` so each call's wall time is appended to the returned
    list (which starts with ``before``: the times of a resumed run's earlier epochs)."""
    times: list[float] = list(before or [])
    train_epoch = trainer._train_epoch

    def timed(*args, **kwargs):
        start = time.perf_counter()
        loss = train_epoch(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        return loss

    trainer._train_epoch = timed
    return times


def record_curve(trainer, before: list[dict] | None = None) -> list[dict]:
    """Wrap ``trainer._train_epoch`` and ``trainer._valid_epoch`` (RecBole's per-epoch
    steps, which every trainer's ``fit`` calls, re-rankers' included) so each epoch appends
    ``{"epoch", "train_loss", "valid" (metrics, when validated), "valid_score", "wall_s"}``
    to the returned list; ``wall_s``: seconds from this call to the end of the epoch's
    validation (or of its training, when it was not validated). ``before``: a resumed run's
    points so far; the new points' ``wall_s`` go on from the last of them."""
    curve: list[dict] = list(before or [])
    start = time.perf_counter() - (curve[-1]["wall_s"] if curve else 0.0)
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def train(train_data, epoch_idx, *args, **kwargs):
        loss = train_epoch(train_data, epoch_idx, *args, **kwargs)
        total = sum(loss) if isinstance(loss, tuple) else loss
        curve.append({"epoch": int(epoch_idx), "train_loss": float(total), "wall_s": time.perf_counter() - start})
        return loss

    def valid(*args, **kwargs):
        score, result = valid_epoch(*args, **kwargs)
        if curve:  # a validation outside fit (none in RecBole) is not an epoch's
            curve[-1].update(valid={k: float(v) for k, v in result.items()}, valid_score=float(score),
                             wall_s=time.perf_counter() - start)
        return score, result

    trainer._train_epoch, trainer._valid_epoch = train, valid
    return curve


def stopped_early(trainer) -> bool:
    """Whether RecBole's early stopping ended ``fit`` (its patience ``stopping_step`` used
    up) rather than the epoch cap ``epochs``."""
    return trainer.cur_step > trainer.stopping_step
