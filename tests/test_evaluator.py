"""GAUC as a value metric next to AUC and LogLoss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import recbole_attn.evaluator as ev
from recbole.evaluator import Evaluator
from recbole.evaluator.collector import DataStruct
from recbole.utils import EvaluatorType


def _pairwise_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_gauc_equals_hand_computed_weighted_per_user_auc():
    users = np.array([1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4])
    scores = np.array([0.9, 0.2, 0.4, 0.4, 0.1, 0.8, 0.3, 0.5, 0.6, 0.2, 0.3, 0.1])
    labels = np.array([1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0])
    # user 1: 4 rows, a tie between a positive and a negative; user 2: 3 rows;
    # users 3 (all positive) and 4 (all negative) are skipped
    auc1 = _pairwise_auc(scores[:4], labels[:4])
    auc2 = _pairwise_auc(scores[4:7], labels[4:7])
    assert auc1 == (1 + 1 + 0.5 + 1) / 4 and auc2 == 0.0
    expected = (4 * auc1 + 3 * auc2) / 7
    assert math.isclose(ev.grouped_auc(users, scores, labels), expected)
    perm = np.random.default_rng(0).permutation(len(users))  # row order does not matter
    assert math.isclose(ev.grouped_auc(users[perm], scores[perm], labels[perm]), expected)


def test_gauc_random_against_brute_force():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 20, 400)
    scores = rng.integers(0, 5, 400).astype(float)  # many ties
    labels = rng.integers(0, 2, 400)
    num = den = 0.0
    for u in np.unique(users):
        sel = users == u
        if labels[sel].min() == labels[sel].max():
            continue
        num += sel.sum() * _pairwise_auc(scores[sel], labels[sel])
        den += sel.sum()
    assert math.isclose(ev.grouped_auc(users, scores, labels), num / den)


def test_gauc_with_no_two_class_user_is_nan():
    assert math.isnan(ev.grouped_auc(np.array([1, 1, 2]), np.array([0.1, 0.2, 0.3]), np.array([1, 1, 0])))


def test_registry_and_evaluator_give_auc_gauc_logloss_together():
    from recbole.evaluator import metric_types

    assert metric_types["gauc"] == EvaluatorType.VALUE
    assert metric_types["rankgauc"] == EvaluatorType.RANKING
    config = {"metrics": ["AUC", "GAUC", "LogLoss"], "metric_decimal_place": 6}
    struct = DataStruct()
    struct.set("rec.score", torch.tensor([0.9, 0.2, 0.4, 0.6, 0.3, 0.1]))
    struct.set("data.label", torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0]))
    struct.set("data.user", torch.tensor([1, 1, 1, 2, 2, 2]))
    result = Evaluator(config).evaluate(struct)
    assert set(result) == {"auc", "gauc", "logloss"}
    # user 1: AUC 1 (3 rows); user 2: positive 0.3 vs negatives 0.6 and 0.1 -> 0.5 (3 rows)
    assert result["gauc"] == pytest.approx(0.75)


def test_collector_collects_user_ids_and_clears_them():
    from recbole.data.interaction import Interaction
    import recbole.trainer.trainer as rb_trainer

    assert rb_trainer.Collector is ev.UserCollector
    config = {
        "metrics": ["AUC", "GAUC"],
        "eval_args": {"mode": {"valid": "uni100", "test": "uni100"}},
        "topk": [10],
        "device": torch.device("cpu"),
        "LABEL_FIELD": "label",
        "USER_ID_FIELD": "user_id",
    }
    collector = ev.UserCollector(config)
    inter = Interaction({"user_id": torch.tensor([3, 3, 5]), "label": torch.tensor([1.0, 0.0, 1.0])})
    collector.eval_batch_collect(torch.tensor([0.5, 0.1, 0.2]), inter, None, None)
    collector.eval_batch_collect(torch.tensor([0.7]), inter[:1], None, None)
    struct = collector.get_data_struct()
    assert struct.get("data.user").tolist() == [3, 3, 5, 3]
    assert "data.user" not in collector.data_struct  # next evaluation starts empty
