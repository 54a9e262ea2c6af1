"""Metrics RecBole lacks: GAUC as a *value* metric, next to AUC and LogLoss in one run.

RecBole 1.2.1's ``GAUC`` is a ranking metric (it reads ``rec.meanrank``), and RecBole
refuses to mix ranking and value metrics in one run, so ``metrics: [AUC, GAUC, LogLoss]``
raises. The DIN paper's GAUC (Zhou et al., KDD 2018, eq. 1) is a value metric over
scored (user, item, label) rows:

    GAUC = sum_u w_u * AUC_u / sum_u w_u,   w_u = number of scored rows (impressions) of u,

over the users whose rows hold both labels (a user whose labels are all 0 or all 1
has no AUC and is skipped).

It needs the user id of every scored row, which RecBole's ``Collector`` does not keep
for value metrics. ``register()`` (run when this module is imported, i.e. when
``recbole_attn`` is imported) does the least it can:

1. replaces the entry ``gauc`` of RecBole's metric registry (``metrics_dict``,
   ``metric_types``, ``metric_information``; the same dict objects RecBole's ``Config``,
   ``Register`` and ``Evaluator`` read) with ``GAUC`` below, a value metric needing
   ``rec.score``, ``data.label`` and ``data.user``; RecBole's ranking GAUC stays
   available under the name ``RankGAUC`` (full-ranking runs that listed ``GAUC`` must
   now list ``RankGAUC``);
2. installs ``UserCollector``, a ``Collector`` subclass that also collects the
   ``USER_ID_FIELD`` of every scored row as ``data.user`` when a metric needs it (and
   clears it after each evaluation like RecBole clears its own keys), as the
   ``Collector`` that RecBole's trainers construct (``recbole.trainer.trainer.Collector``).

Built-in models (RecBole's DIN, DIEN) get the same GAUC through the same trainer.
"""

from __future__ import annotations

import numpy as np

import recbole.evaluator as rb_evaluator
import recbole.evaluator.collector as rb_collector
import recbole.evaluator.register as rb_register
from recbole.evaluator.base_metric import AbstractMetric
from recbole.evaluator.metrics import GAUC as RecBoleRankingGAUC
from recbole.utils import EvaluatorType

USER_KEY = "data.user"


def grouped_auc(users: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUC; users with one label class skipped.

    Ties within a user count one half (average ranks). Returns NaN when no user has
    both labels.
    """
    users = np.asarray(users).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1) > 0.5
    if len(users) == 0:
        return float("nan")
    order = np.lexsort((scores, users))  # by user, then score ascending
    u, s, y = users[order], scores[order], labels[order]
    n = len(u)
    # runs of equal (user, score): average 1-based global rank of each run
    new_run = np.r_[True, (u[1:] != u[:-1]) | (s[1:] != s[:-1])]
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.r_[run_start[1:], n]  # exclusive
    avg_rank = ((run_start + 1 + run_end) / 2.0)[run_id]
    # subtract each user's offset to get ranks within the user
    new_user = np.r_[True, u[1:] != u[:-1]]
    user_id = np.cumsum(new_user) - 1
    user_start = np.flatnonzero(new_user)
    rank = avg_rank - user_start[user_id]
    n_rows = np.bincount(user_id)
    n_pos = np.bincount(user_id, weights=y.astype(np.float64))
    n_neg = n_rows - n_pos
    pos_rank_sum = np.bincount(user_id, weights=np.where(y, rank, 0.0))
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return float("nan")
    auc = (pos_rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2) / (n_pos[valid] * n_neg[valid])
    weights = n_rows[valid]
    return float((auc * weights).sum() / weights.sum())


class GAUC(AbstractMetric):
    r"""Group AUC of the DIN paper as a value metric (see the module docstring).

    .. math::
        \mathrm{GAUC} = \frac{\sum_u w_u \, \mathrm{AUC}_u}{\sum_u w_u}
    """

    metric_type = EvaluatorType.VALUE
    metric_need = ["rec.score", "data.label", USER_KEY]
    smaller = False

    def calculate_metric(self, dataobject):
        scores = dataobject.get("rec.score").squeeze(-1).numpy()
        labels = dataobject.get("data.label").squeeze(-1).numpy()
        users = dataobject.get(USER_KEY).numpy()
        return {"gauc": round(grouped_auc(users, scores, labels), self.decimal_place)}


class RankGAUC(RecBoleRankingGAUC):
    """RecBole's ranking GAUC (reads ``rec.meanrank``), under the name ``RankGAUC``."""


class UserCollector(rb_collector.Collector):
    """RecBole's ``Collector`` that also keeps the user id of each scored row (``data.user``)."""

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        if self.register.need(USER_KEY):
            self.data_struct.update_tensor(USER_KEY, interaction[self.config["USER_ID_FIELD"]].to(self.device))

    def get_data_struct(self):
        returned = super().get_data_struct()
        if USER_KEY in self.data_struct:
            del self.data_struct[USER_KEY]
        return returned


_registered = False


def register() -> None:
    """Register ``GAUC`` (value) and ``RankGAUC`` and install ``UserCollector``; idempotent."""
    global _registered
    if _registered:
        return
    for name, cls in (("gauc", GAUC), ("rankgauc", RankGAUC)):
        rb_register.metrics_dict[name] = cls
        rb_register.metric_types[name] = cls.metric_type
        rb_register.metric_information[name] = cls.metric_need
        if cls.smaller and name not in rb_register.smaller_metrics:
            rb_register.smaller_metrics.append(name)
    import recbole.trainer.trainer as rb_trainer

    rb_trainer.Collector = UserCollector
    rb_evaluator.Collector = UserCollector
    _registered = True


register()

__all__ = ["GAUC", "RankGAUC", "UserCollector", "grouped_auc", "register"]
