"""Epoch timing for benchmarks. Imports only torch, so a baseline process can load this
file by path without importing (and so patching RecBole through) ``recbole_attn``."""

from __future__ import annotations

import time

import torch


def time_epochs(trainer) -> list[float]:
    """Wrap ``trainer._train_epoch`` so each call's wall time is appended to the returned list."""
    times: list[float] = []
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
