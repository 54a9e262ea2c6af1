"""PRM's trainer: RecBole's, fitted on the ranker's lists at the validation point.

Used by ``recbole_attn.model.rerank.prm.PRM`` (its ``trainer_class``); why PRM learns
from those lists is in PRM's module docstring.
"""

from __future__ import annotations

import torch

from recbole.trainer import Trainer

from recbole_attn.data.rerank import validation_point_loaders
from recbole_attn.errors import ConfigError


class PRMTrainer(Trainer):
    """RecBole's trainer, fitted on the validation-point lists; see PRM's module docstring."""

    def _build_optimizer(self, **kwargs):
        kwargs.setdefault("params", [p for p in self.model.parameters() if p.requires_grad])
        return super()._build_optimizer(**kwargs)

    def fit(
        self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None
    ):
        """Train PRM on the ranker's lists at the validation point; ``train_data`` is not read.

        Args:
            train_data: RecBole's training loader (unused: the ranker was fitted on it).
            valid_data: RecBole's validation loader; split by user into PRM's training
                lists and the held-out lists for early stopping.
        """
        if valid_data is None:
            raise ConfigError("PRM learns from the validation-point lists: valid_data is required")
        prm_train, prm_holdout = validation_point_loaders(
            self.config, valid_data, self.config["prm_holdout_ratio"]
        )
        self.logger.info(
            f"PRM trains on {len(prm_train.dataset)} validation-point lists, "
            f"{0 if prm_holdout is None else len(prm_holdout.dataset)} held out for early stopping"
        )
        return super().fit(prm_train, prm_holdout, verbose, saved, show_progress, callback_fn)

    @torch.no_grad()
    def evaluate_initial(self, eval_data, show_progress=False):
        """The ranker's own (initial) list, measured by the same evaluator as PRM's."""
        self.model.rerank = False
        try:
            return Trainer.evaluate(self, eval_data, load_best_model=False, show_progress=show_progress)
        finally:
            self.model.rerank = True
