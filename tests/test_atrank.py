"""ATRank: reference-code layout and init, behaviour groups, attention, evaluation, bad input."""

from __future__ import annotations

import inspect
import math
import re

import pytest
import torch
import torch.nn.functional as F
import yaml

from recbole.data.interaction import Interaction

from recbole_attn.config import PROPERTIES_DIR, ConfigError
from recbole.model.layers import FeedForward

from recbole_attn.model import behavior_encoder, behavior_groups
from recbole_attn.model.context_aware_recommender import atrank as atrank_module
from recbole_attn.model.context_aware_recommender.atrank import ATRank
from recbole_attn.model.multi_space_attention import MultiSpaceAttention
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
# every option at the paper's variant (the defaults follow the reference code)
PAPER = dict(time_encoding="sum", attention_score="bilinear", vanilla_attention="bilinear", target_embedding="projected")


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
    source = "".join(inspect.getsource(m) for m in (atrank_module, behavior_groups, behavior_encoder))
    read = set(re.findall(r"config\[\"(\w+)\"\]", source))
    ours = set(yaml.safe_load((PROPERTIES_DIR / "model" / "ATRank.yaml").read_text()))
    recbole = {
        "LABEL_FIELD", "TIME_FIELD", "LIST_SUFFIX", "ITEM_LIST_LENGTH_FIELD", "dataset",
        "normalize_all", "normalize_field",
    }
    assert read - recbole <= ours, read - recbole - ours
    assert {"n_spaces", "time_buckets", "behavior_groups", "single_group", "use_time"} <= ours
    assert {"time_encoding", "attention_score", "vanilla_attention", "target_embedding"} <= ours


# ---------------------------------------------------------------- reference code


def test_behaviour_is_concatenated_with_one_hot_time_and_action_then_projected(model_and_data):
    _, model, train, _, _ = model_and_data
    enc = model.encoder
    obj = enc.object_embedding[0]
    n_actions = len(model.vocab.actions)
    assert enc.projection[0].in_features == obj.out_dim + n_actions + model.time_buckets
    assert len(enc.time_embedding) == 0 and len(enc.action_embedding) == 0  # no summed tables
    items, actions, buckets = torch.tensor([3, 3]), torch.tensor([1, 1]), torch.tensor([2, 5])
    with torch.no_grad():
        s = enc.embed_group(0, items, actions, buckets)
        kernel = enc.projection[0].weight  # [H, d + A + T]
        expected = kernel[:, obj.out_dim + n_actions + 2] - kernel[:, obj.out_dim + n_actions + 5]
        assert torch.allclose(s[0] - s[1], expected, atol=1e-6)  # a bucket selects a kernel column
        layout = enc.layout(0, items[:1], actions[:1], buckets[:1])[0]
        assert torch.equal(layout[: obj.out_dim], obj(items[:1])[0])
        assert layout[obj.out_dim :].tolist() == [1.0] + [0.0] * (n_actions - 1) + [0, 0, 1] + [0.0] * 5


def test_paper_variant_sums_time_and_action_embeddings():
    _, model, _, _, _ = atrank(time_encoding="sum")
    enc = model.encoder
    items, actions, buckets = torch.tensor([3]), torch.tensor([2]), torch.tensor([4])
    with torch.no_grad():
        u = enc.object_embedding[0](items) + enc.action_embedding[0](actions) + enc.time_embedding[0](buckets)
        assert torch.allclose(enc.embed_group(0, items, actions, buckets), enc.projection[0](u))


def test_raw_target_is_the_object_embedding():
    _, model, _, _, _ = atrank(target_embedding="raw")
    items = torch.tensor([1, 2, 5])
    obj = model.encoder.object_embedding[model.target_group]
    assert obj.out_dim == model.hidden_size  # 8 (id) + 8 (category), as the reference's 64 + 64
    with torch.no_grad():
        assert torch.equal(model.encoder.target(items), obj(items))
    _, projected, _, _, _ = atrank(target_embedding="projected")
    projected.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(projected.encoder.target(items), obj(items))


def reference_multihead_attention(att, queries, keys, keys_length):
    """atrank/model.py ``multihead_attention`` (dropout 0) translated line by line."""
    h = att.n_spaces
    q = F.relu(att.query(queries))
    k = F.relu(att.key(keys))
    v = F.relu(att.value(keys))
    q_, k_, v_ = (torch.cat(x.split(x.shape[-1] // h, dim=2), dim=0) for x in (q, k, v))  # (h*N, T, C/h)
    out = q_ @ k_.transpose(1, 2) / k_.shape[-1] ** 0.5
    key_masks = (torch.arange(keys.shape[1])[None] < keys_length[:, None]).repeat(h, 1)
    key_masks = key_masks[:, None].expand_as(out)
    out = torch.where(key_masks, out, torch.full_like(out, -(2**32) + 1)).softmax(-1)
    out = out @ v_
    out = torch.cat(out.split(queries.shape[0], dim=0), dim=2)
    return F.layer_norm(out + queries, out.shape[-1:], att.norm.weight, att.norm.bias, 1e-8)


def test_attention_block_is_the_reference_multihead_attention_with_ffn(model_and_data):
    _, model, _, _, _ = model_and_data
    torch.manual_seed(0)
    seq, target = torch.randn(3, 5, 16), torch.randn(3, 1, 16)
    lengths = torch.tensor([5, 2, 1])
    mask = torch.arange(5)[None] < lengths[:, None]
    self_block, vanilla_block = model.blocks[0], model.vanilla_blocks[0]
    assert isinstance(vanilla_block.ffn, FeedForward) and vanilla_block.ffn.dense_1.out_features == 16
    with torch.no_grad():
        for block, queries in [(self_block, seq), (vanilla_block, target)]:
            att = block.attention
            ours, _ = att(queries, seq, mask)
            ref = reference_multihead_attention(att, queries, seq, lengths)
            real = mask if queries.shape[1] == 5 else torch.ones(3, 1, dtype=torch.bool)
            assert torch.allclose(ours[real], ref[real], atol=1e-5)
    # the paper's bilinear score is another function of the same inputs
    bilinear = MultiSpaceAttention(16, 4, 0.0, "bilinear")
    assert not hasattr(bilinear, "key") and bilinear.bilinear.shape == (4, 4, 16)


def test_embedding_tables_follow_the_reference_glorot_uniform_init():
    _, model, _, _, _ = atrank(time_encoding="sum")
    enc = model.encoder
    tables = [enc.object_embedding[0].id_embedding, enc.time_embedding[0], enc.action_embedding[0]]
    for table in tables:
        n, e = table.weight.shape
        bound = math.sqrt(6.0 / (n + e))  # tf.glorot_uniform_initializer on [n, e]
        w = table.weight[1:] if table.padding_idx is not None else table.weight
        assert w.abs().max() <= bound + 1e-6, table  # Xavier normal would exceed it
        assert w.abs().max() > 0.9 * bound and abs(w.std() - bound / math.sqrt(3)) < 0.15 * bound
    for linear in [enc.projection[0], model.blocks[0].attention.query, model.blocks[0].ffn.dense_1]:
        bound = math.sqrt(6.0 / sum(linear.weight.shape))
        assert linear.weight.abs().max() <= bound + 1e-6 and not linear.bias.any()
    assert not model.item_bias.weight.any()


# ---------------------------------------------------------------- invariants


@pytest.mark.parametrize("paper", [False, True])
def test_padded_behaviours_change_no_score(model_and_data, paper):
    _, model, train, _, _ = atrank(**PAPER) if paper else model_and_data
    model.eval()
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
    assert model.encoder.group_of[cart] == 1 and swapped.encoder.group_of[cart] == 0


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
    assert target.shape == (b, k, l)  # the reference's multi-head vanilla attention
    assert torch.allclose(target.sum(-1), torch.ones(b, k), atol=1e-5)
    assert (target * ~mask[:, None]).abs().max() == 0
    assert not torch.allclose(target[several := mask.sum(1) >= 3, 0], target[several, 1], atol=1e-4)
    with torch.no_grad():  # the fused attention (scoring) and the explicit one (weights) agree
        assert torch.allclose(model._forward(batch, need_weights=True)[0], model.forward(batch), atol=1e-5)
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


@pytest.mark.parametrize(
    "options", [dict(single_group=True), dict(use_time=False), dict(ranking="mlp"), PAPER, dict(PAPER, use_time=False)]
)
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
        (dict(time_encoding="add"), r"time_encoding must be one of concat, sum"),
        (dict(vanilla_attention="dot"), r"vanilla_attention must be one of multihead, bilinear"),
        (dict(attention_score="additive"), r"attention_score must be one of dot, bilinear"),
        (dict(target_embedding="mixed"), r"target_embedding must be one of raw, projected"),
        (dict(group_embedding_size={"browse": 8}), r"no size for group\(s\) engage"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        atrank(**options)
