"""ATRank: behaviour groups, multi-space self-attention, evaluation and bad input."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
import yaml

from recbole.data.interaction import Interaction

from recbole_attn.config import PROPERTIES_DIR, ConfigError
from recbole_attn.model.context_aware_recommender import atrank as atrank_module
from recbole_attn.model.context_aware_recommender.atrank import ATRank
from conftest import build

LOAD_COL = {
    "inter": ["user_id", "item_id", "rating", "timestamp", "behavior_type"],
    "item": ["item_id", "category"],
}
SMALL = dict(
    load_col=LOAD_COL,
    metrics=["AUC", "GAUC", "LogLoss"],
    valid_metric="AUC",
    hidden_size=16,
    n_spaces=4,
    inner_size=16,
    group_embedding_size={"browse": 8, "engage": 8},
    time_unit=600.0,  # tiny's gaps are minutes to hours: several buckets are used
    time_buckets=8,
)


def atrank(**overrides):
    return build("ATRank", **{**SMALL, **overrides})


def eval_batch(data) -> Interaction:
    batch = next(iter(data))
    return batch[0] if isinstance(batch, tuple) else batch


@pytest.fixture(scope="module")
def model_and_data():
    config, model, train, valid, test = atrank()
    model.eval()
    return config, model, train, valid, test


def scores(model, batch):
    with torch.no_grad():
        return model.predict(batch)


# ---------------------------------------------------------------- config


def test_every_key_the_model_reads_is_in_its_yaml():
    source = inspect.getsource(atrank_module)
    read = set(re.findall(r"config\[\"(\w+)\"\]", source))
    ours = set(yaml.safe_load((PROPERTIES_DIR / "model" / "ATRank.yaml").read_text()))
    recbole = {"LABEL_FIELD", "TIME_FIELD", "LIST_SUFFIX", "ITEM_LIST_LENGTH_FIELD", "dataset"}
    assert read - recbole <= ours, read - recbole - ours
    assert {"n_spaces", "time_buckets", "behavior_groups", "single_group", "use_time"} <= ours


# ---------------------------------------------------------------- invariants


def test_padded_behaviours_change_no_score(model_and_data):
    _, model, train, _, _ = model_and_data
    batch = next(iter(train))
    seq, length = batch["item_id_list"], batch["item_length"]
    pad = torch.arange(seq.shape[1]).unsqueeze(0) >= length.unsqueeze(1)
    assert pad.any()
    noisy = batch.copy() if hasattr(batch, "copy") else Interaction(dict(batch.interaction))
    n = int(pad.sum())
    fields = {
        "item_id_list": torch.randint(1, model.n_items, (n,)),
        "behavior_type_list": torch.randint(1, len(model.vocab.actions) + 1, (n,)),
        "timestamp_list": torch.rand(n) * 1e6,
    }
    updated = {}
    for name, values in fields.items():
        column = batch[name].clone()
        column[pad] = values.to(column.dtype)
        updated[name] = column
    noisy = Interaction({**batch.interaction, **updated})
    with torch.no_grad():
        assert torch.equal(model.predict(batch), model.predict(noisy))
        assert torch.equal(model.full_sort_predict(batch[:8]), model.full_sort_predict(noisy[:8]))


def test_group_mapping_decides_the_projection(model_and_data):
    config, model, train, _, _ = model_and_data
    batch = next(iter(train))
    _, swapped, _, _, _ = atrank(behavior_groups={"browse": ["pv", "cart"], "engage": ["fav", "buy"]})
    swapped.load_state_dict(model.state_dict())  # same weights, only the mapping differs
    swapped.eval()
    same, other = scores(model, batch), scores(swapped, batch)
    assert same.shape == other.shape
    assert not torch.allclose(same, other)
    # cart behaviours now go through group 0: the embedding of a cart behaviour differs
    cart = model.vocab.actions.index("cart") + 1
    assert model.group_of[cart] == 1 and swapped.group_of[cart] == 0


def test_time_buckets_are_monotone_in_the_gap(model_and_data):
    _, model, _, _, _ = model_and_data
    target = torch.tensor([1e7])
    behaviour_times = torch.linspace(1e7, 0, 500).unsqueeze(0)  # gaps grow from 0 to 1e7
    buckets = model.bucket(target, behaviour_times)[0]
    assert buckets[0] == 0 and buckets[-1] == model.time_buckets - 1
    assert (buckets[1:] >= buckets[:-1]).all()


def test_time_encoding_moves_scores_and_can_be_switched_off(model_and_data):
    _, model, train, _, _ = model_and_data
    batch = next(iter(train))
    shifted = Interaction({**batch.interaction, "timestamp": batch["timestamp"] + 5e5})
    assert not torch.allclose(scores(model, batch), scores(model, shifted))
    _, untimed, _, _, _ = atrank(use_time=False)
    untimed.eval()
    assert torch.equal(scores(untimed, batch), scores(untimed, shifted))


def test_each_space_has_its_own_attention(model_and_data):
    _, model, train, _, _ = model_and_data
    batch = next(iter(train))
    weights = model.attention_weights(batch)
    attn, mask, target = weights["self"], weights["mask"], weights["target"]
    b, k, l, _ = attn.shape
    assert (b, k, l) == (len(batch), model.n_spaces, batch["item_id_list"].shape[1])
    real_rows = mask.unsqueeze(1).expand(b, k, l)
    assert torch.allclose(attn.sum(-1)[real_rows], torch.ones(int(real_rows.sum())), atol=1e-5)
    assert (attn * ~mask[:, None, None, :]).abs().max() == 0  # no weight on padding keys
    assert torch.allclose(target.sum(-1), torch.ones(b), atol=1e-5)
    assert (target * ~mask).abs().max() == 0
    with torch.no_grad():  # the fused attention (scoring) and the explicit one (weights) agree
        assert torch.allclose(model._forward(batch, need_weights=True)[0], model.forward(batch), atol=1e-5)
    several = mask.sum(1) >= 3
    for i in range(k):
        for j in range(i + 1, k):
            assert not torch.allclose(attn[several, i], attn[several, j], atol=1e-4), (i, j)


def test_full_sort_predict_equals_predict_item_by_item(model_and_data):
    _, model, _, _, test = model_and_data
    batch = eval_batch(test)[:8]
    model.full_sort_chunk = 7  # several chunks, the last one partial
    with torch.no_grad():
        full = model.full_sort_predict(batch)
        b, n = full.shape
        expanded = batch.repeat_interleave(n)
        expanded.update(Interaction({"item_id": torch.arange(n).repeat(b)}))
        single = model.predict(expanded).view(b, n)
    assert full.shape == (8, model.n_items)
    assert torch.allclose(full, single, atol=1e-6)


def test_save_load_gives_the_same_scores(model_and_data, tmp_path):
    config, model, train, _, test = model_and_data
    batch = eval_batch(test)
    path = tmp_path / "atrank.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    torch.manual_seed(123)
    fresh = ATRank(config, train._dataset).eval()
    assert not torch.allclose(scores(fresh, batch), scores(model, batch))
    fresh.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    assert torch.equal(scores(fresh, batch), scores(model, batch))


def test_same_seed_same_numbers():
    first = atrank()
    second = atrank()
    batch = next(iter(first[2]))
    assert torch.equal(first[1].calculate_loss(batch), second[1].calculate_loss(batch))


# ---------------------------------------------------------------- behaviours


def test_rating_derived_actions_follow_the_ranges():
    _, model, train, _, _ = atrank(
        behavior_field="rating",
        rating_actions={"neg": [1, 2], "mid": [3, 3], "pos": [4, 5]},
        behavior_groups={"low": ["neg", "mid"], "high": ["pos"]},
        group_embedding_size={"low": 8, "high": 4},
        target_action="pos",
    )
    assert model.group_sizes == [8, 4]
    batch = next(iter(train))
    _, actions, _, mask = model.history(batch)
    ratings = batch["rating_list"][mask]
    expected = torch.where(ratings <= 2, 1, torch.where(ratings == 3, 2, 3))
    assert torch.equal(actions[mask], expected)
    assert model.vocab.groups == ["low", "high"] and model.target_group == 1


@pytest.mark.parametrize("options", [dict(single_group=True), dict(use_time=False), dict(ranking="mlp")])
def test_ablations_train_and_evaluate(options, tmp_path):
    from recbole_attn.trainer import get_trainer

    config, model, train, valid, test = atrank(epochs=1, checkpoint_dir=str(tmp_path), **options)
    if options.get("single_group"):
        assert model.vocab.groups == ["all"] and model.group_sizes == [8]  # target pv's group
    trainer = get_trainer(config["MODEL_TYPE"], "ATRank", ATRank)(config, model)
    trainer.fit(train, valid, saved=False, show_progress=False)
    result = trainer.evaluate(test, load_best_model=False, show_progress=False)
    assert set(result) == {"auc", "gauc", "logloss"}
    assert all(0.0 <= float(v) for v in result.values())


def test_loss_falls_on_the_tiny_fixture(tmp_path):
    from recbole_attn.trainer import get_trainer

    config, model, train, valid, _ = atrank(epochs=8, learning_rate=0.01, checkpoint_dir=str(tmp_path))
    trainer = get_trainer(config["MODEL_TYPE"], "ATRank", ATRank)(config, model)
    trainer.fit(train, valid, saved=False, show_progress=False)
    losses = trainer.train_loss_dict
    assert losses[max(losses)] < 0.8 * losses[0], losses


# ---------------------------------------------------------------- bad input


def test_missing_behavior_field_is_named():
    load_col = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "category"]}
    with pytest.raises(ConfigError, match=r"behavior_field='behavior_type'.*load_col"):
        atrank(load_col=load_col)


def test_action_no_group_claims_is_named():
    with pytest.raises(ConfigError, match=r"'buy' occurs in the data but no group"):
        atrank(behavior_groups={"browse": ["pv"], "engage": ["cart", "fav"]})


def test_group_left_empty_by_the_data_is_named():
    with pytest.raises(ConfigError, match=r"group 'top' \(best\) is left empty by the data"):
        atrank(
            behavior_field="rating",
            rating_actions={"low": [1, 3], "high": [4, 5], "best": [6, 10]},
            behavior_groups={"rest": ["low", "high"], "top": ["best"]},
            target_action="high",
        )


def test_rating_outside_every_range_is_named():
    with pytest.raises(ConfigError, match=r"rating values \[3\.0\] fall in no range"):
        atrank(
            behavior_field="rating",
            rating_actions={"low": [1, 2], "high": [4, 5]},
            behavior_groups={"a": ["low"], "b": ["high"]},
            target_action="high",
        )


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(behavior_groups={"browse": ["pv", "click"], "engage": ["cart", "fav", "buy"]}), r"'click'.*actions: pv, cart, fav, buy"),
        (dict(behavior_groups={"a": ["pv", "cart"], "b": ["cart", "fav", "buy"]}), r"'cart' is in two groups"),
        (dict(target_action="click"), r"target_action='click'.*actions: pv, cart, fav, buy"),
        (dict(normalize_all=True), r"normalize_all=False"),
        (dict(n_spaces=3), r"n_spaces \(3\) must divide hidden_size \(16\)"),
        (dict(ranking="deep"), r"ranking must be one of dot, mlp"),
        (dict(group_embedding_size={"browse": 8}), r"no size for group\(s\) engage"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        atrank(**options)
