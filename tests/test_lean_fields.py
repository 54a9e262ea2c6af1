"""Lean batches of the models that read item ids only, and the vectorised negative sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recbole.sampler import RepeatableSampler
from recbole.utils import init_seed

from recbole_attn.data.lean import ITEM_ID_MODELS, LeanSampler, LeanSequentialDataset, reads_item_ids_only
from recbole_attn.fields import fields_used
from test_sequential_lean import LOAD_COL, assert_same_loaders, built


@pytest.mark.parametrize("model", sorted(ITEM_ID_MODELS))
def test_item_id_models_get_item_histories_only_and_recbole_s_loss(model):
    lean = built(model, "lean", load_col=LOAD_COL)  # item features and two more inter fields loaded
    base = built(model, "recbole", load_col=LOAD_COL)
    assert type(lean[1]) is LeanSequentialDataset and reads_item_ids_only(lean[0])
    init_seed(lean[0]["seed"], True)
    lean[2].generator.manual_seed(lean[0]["seed"])
    batch = next(iter(lean[2]))
    lists = [f for f in batch.interaction if f.endswith(lean[0]["LIST_SUFFIX"])]
    assert lists == ["item_id_list"], lists
    assert "category" not in batch.interaction and "neg_category" not in batch.interaction
    assert {"user_id", "item_id", "item_length"} <= set(batch.interaction)
    assert {"rating_list", "timestamp_list", "category"} <= set(base[2].dataset[np.arange(4)].interaction)
    assert assert_same_loaders(lean[2:5], base[2:5], lean[0]["seed"]) > 3  # the fields kept are RecBole's
    results = []
    for config, _, train, valid, _, _, trainer in (lean, base):
        init_seed(config["seed"], True)
        loss = trainer._train_epoch(train, 0, show_progress=False)
        results.append((loss, trainer._valid_epoch(valid, show_progress=False)))
    assert results[0] == results[1]


@pytest.mark.parametrize("model", sorted(ITEM_ID_MODELS))
def test_item_id_models_read_no_side_fields(model):
    """The list of item-id models stays true: each reads no side feature (``fields_used``)."""
    config, dataset, train, *_ , net, _ = built(model, "lean", load_col=LOAD_COL)
    assert fields_used(net, train._dataset) == [f"{model} no side features (item ids only)"]


def test_other_models_and_transforms_keep_every_field():
    nova = built("NOVABERT", "lean", load_col=LOAD_COL, behavior_side_fields=["rating"])
    assert not reads_item_ids_only(nova[0]) and nova[2]._dataset.batch_lists is None
    batch = nova[2]._dataset[np.arange(4)]
    assert {"item_id_list", "rating_list", "timestamp_list", "category"} <= set(batch.interaction)
    cropped = built("SASRec", "lean", transform="crop_itemseq")
    assert not reads_item_ids_only(cropped[0]) and cropped[2]._dataset.batch_lists is None


def test_item_id_model_loaders_sample_with_lean_sampler():
    lean = built("AttRec", "lean", load_col=LOAD_COL)
    base = built("AttRec", "recbole", load_col=LOAD_COL)
    assert type(lean[2]._sampler) is LeanSampler and type(base[2]._sampler) is RepeatableSampler


class _Data:
    iid_field, user_num, item_num = "item_id", 50, 6

    def __init__(self, items):
        self.inter_feat = {"item_id": torch.as_tensor(items)}


@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_lean_sampler_draws_recbole_s_negatives(distribution):
    rng = np.random.default_rng(3)
    data = _Data(rng.integers(1, 6, 300))  # 5 items: many draws hit the positive and are redrawn
    ours = LeanSampler(["train"], data, distribution).set_phase("train")
    theirs = RepeatableSampler(["train"], data, distribution).set_phase("train")
    for rows, num in ((1, 1), (1, 4), (2, 1), (64, 1), (300, 3), (17, 100)):
        users, items = rng.integers(0, 50, rows), rng.integers(1, 6, rows)
        np.random.seed(rows * num)
        a = ours.sample_by_user_ids(users, items, num)
        state = np.random.get_state()
        np.random.seed(rows * num)
        b = theirs.sample_by_user_ids(users, items, num)
        assert a.dtype == b.dtype == torch.long and torch.equal(a, b), (rows, num)
        assert (a != torch.as_tensor(items).repeat(num)).all()
        assert np.array_equal(state[1], np.random.get_state()[1])  # the same draws consumed
