"""NOVABERT and AttnBERT4Rec: invariants of the models, their masking and training."""

from __future__ import annotations

import shutil

import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_attn.config import ConfigError
from recbole_attn.model.cloze import append_at_end, cloze_mask
from recbole_attn.model.sequential_recommender.nova_bert import NOVABERT
from conftest import FIXTURES, build, tiny_config

LOAD_COL = {
    "inter": ["user_id", "item_id", "rating", "timestamp", "behavior_type"],
    "item": ["item_id", "category"],
}
SIDE = dict(
    load_col=LOAD_COL,
    item_side_fields=["category"],
    behavior_side_fields=["rating", "timestamp", "behavior_type"],
)


def nova(**overrides):
    """(config, model, train, valid, test) of NOVABERT on the tiny fixture with side information."""
    return build("NOVABERT", **{**SIDE, **overrides})


def with_values(batch: Interaction, **fields) -> Interaction:
    """A copy of ``batch`` with some fields replaced."""
    data = {k: batch[k] for k in batch.columns}
    data.update(fields)
    return Interaction(data)


def eval_batch(data) -> Interaction:
    return next(iter(data))[0]


# ---------------------------------------------------------------- NOVA vs invasive


def _zero_queries(model) -> None:
    with torch.no_grad():
        for layer in model.layers:
            layer.query.weight.zero_()
            layer.query.bias.zero_()


def _scores_before_and_after_side_change(model, batch):
    """Scores, then scores with other item-feature and behaviour values."""
    model.eval()
    _zero_queries(model)
    with torch.no_grad():
        before = model.full_sort_predict(batch)
        gen = torch.Generator().manual_seed(0)
        table = model.side.item_category
        high = int(table.max()) + 1
        model.side.item_category = torch.randint(1, high, table.shape, generator=gen)
        model.side.item_category[0] = 0
        model.side.item_category[model.mask_token] = 0
        changed = with_values(
            batch,
            rating_list=torch.rand(batch["rating_list"].shape, generator=gen) * 5,
            timestamp_list=batch["timestamp_list"].flip(0),
            behavior_type_list=batch["behavior_type_list"].flip(0),
        )
        after = model.full_sort_predict(changed)
    return before, after


def test_nova_output_ignores_side_values_when_attention_is_uniform():
    # With W_Q = 0 every query attends uniformly; NOVA's values come from item ids only,
    # and side information is never propagated between layers: nothing may change.
    _, model, _, valid, _ = nova(n_layers=2, attention_type="nova", fusion_type="concat")
    before, after = _scores_before_and_after_side_change(model, eval_batch(valid))
    assert torch.allclose(before, after, rtol=0, atol=1e-6)


def test_invasive_output_follows_side_values_when_attention_is_uniform():
    _, model, _, valid, _ = nova(n_layers=2, attention_type="invasive", fusion_type="concat")
    before, after = _scores_before_and_after_side_change(model, eval_batch(valid))
    assert (before - after).abs().max() > 1e-4  # scores are ~5e-2 at initialisation


def test_nova_side_information_does_change_the_attention():
    _, model, _, valid, _ = nova(attention_type="nova", fusion_type="add")
    model.eval()
    batch = eval_batch(valid)
    with torch.no_grad():
        before = model.full_sort_predict(batch)
        changed = with_values(batch, rating_list=batch["rating_list"].flip(0))
        after = model.full_sort_predict(changed)
    assert (before - after).abs().max() > 0  # small at initialisation, but there


# ---------------------------------------------------------------- side information


def _qk_input_norms(model, batch) -> tuple[float, list[float]]:
    """Mean norm of the id stream and of each side input entering layer 0's fusion."""
    seen = {}

    def capture(module, args):
        seen["h"], seen["sides"] = args[0], args[1]

    handle = model.layers[0].fusion.register_forward_pre_hook(capture)
    model.eval()
    with torch.no_grad():
        model.full_sort_predict(batch)
    handle.remove()
    seq_len = batch["item_id_list"].shape[1]
    shown = torch.clamp(batch["item_length"] + 1, max=seq_len)  # history plus [mask]
    real = torch.arange(seq_len).unsqueeze(0) < shown.unsqueeze(1)  # [B, L]
    norm = lambda x: x.norm(dim=-1)[real].mean().item()  # noqa: E731
    return norm(seen["h"]), [norm(s) for s in seen["sides"]]


@pytest.mark.parametrize("fusion", ["add", "gating"])
def test_nova_side_inputs_reach_queries_and_keys_at_the_id_streams_scale(fusion):
    _, model, _, valid, _ = nova(attention_type="nova", fusion_type=fusion)
    id_norm, side_norms = _qk_input_norms(model, eval_batch(valid))
    assert len(side_norms) == 5  # position, category, rating, timestamp, behavior_type
    for name, side in zip(["position", "category", "rating", "timestamp", "type"], side_norms):
        assert 0.5 < side / id_norm < 2.0, (name, side, id_norm)


def test_without_side_layer_norm_the_sides_are_a_few_percent_of_the_id_stream():
    _, model, _, valid, _ = nova(attention_type="nova", side_layer_norm=False)
    id_norm, side_norms = _qk_input_norms(model, eval_batch(valid))
    assert max(side_norms) / id_norm < 0.1  # the scale defect side_layer_norm removes


def test_item_side_fields_default_is_every_loaded_item_feature():
    _, model, _, _, _ = build("NOVABERT", load_col=LOAD_COL)
    assert model.side_fields_used == {"item": ["category"], "behavior": ["position"]}
    _, bare, _, _, _ = build("NOVABERT")  # no .item columns loaded: no item side fields
    assert bare.side_fields_used == {"item": [], "behavior": ["position"]}
    _, none, _, _, _ = build("NOVABERT", load_col=LOAD_COL, item_side_fields=[])
    assert none.side_fields_used["item"] == []


def test_behavior_example_preset_trains_with_rating_and_time_buckets():
    import yaml

    from conftest import REPO

    preset = yaml.safe_load((REPO / "benchmarks/presets/nova-behavior-ml-100k.yaml").read_text())
    _, model, train, valid, _ = build("NOVABERT", **preset)
    assert model.side_fields_used["behavior"] == ["position", "rating", "timestamp"]
    ratings = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])  # each rating its own bucket
    assert torch.bucketize(ratings, model.side.bounds_rating, right=True).unique().numel() == 5
    assert 1 <= len(model.side.bounds_timestamp) <= 9
    model.train()
    loss = model.calculate_loss(next(iter(train)))
    loss.backward()
    assert torch.isfinite(loss)
    for field in ("rating", "timestamp"):
        assert model.side.behavior_side[field].weight.grad.abs().sum() > 0, field


# ---------------------------------------------------------------- masking


def test_masking_never_selects_padding_and_always_one_real_item():
    torch.manual_seed(0)
    max_len = 12
    for trial in range(300):
        length = torch.randint(1, max_len + 1, (64,))
        ratio = [0.01, 0.2, 0.6, 1.0][trial % 4]
        last_ratio = [0.0, 0.3, 1.0][trial % 3]
        masked = cloze_mask(length, max_len, ratio, last_ratio)
        real = torch.arange(max_len).unsqueeze(0) < length.unsqueeze(1)
        assert not (masked & ~real).any()
        assert (masked.sum(1) >= 1).all()


def test_mask_rate_and_last_item_share():
    torch.manual_seed(1)
    length = torch.full((20000,), 50)
    masked = cloze_mask(length, 50, 0.2, 0.0)
    assert abs(masked.float().mean().item() - 0.2) < 0.01
    only_last = cloze_mask(length, 50, 0.2, 1.0)
    assert only_last.sum(1).eq(1).all() and only_last[:, 49].all()
    mixed = cloze_mask(length, 50, 0.2, 0.5)
    share = (mixed.sum(1).eq(1) & mixed[:, 49]).float().mean().item()
    assert abs(share - 0.5) < 0.02  # (+ random rows whose only mask is the last item: ~0)
    assert cloze_mask(torch.tensor([3, 1]), 4, 1.0, 0.0).tolist() == [
        [True, True, True, False],
        [True, False, False, False],
    ]


def test_masking_is_fresh_every_batch():
    length = torch.full((8,), 20)
    assert not torch.equal(cloze_mask(length, 20, 0.2, 0.0), cloze_mask(length, 20, 0.2, 0.0))


def test_append_keeps_all_items_and_shifts_full_rows():
    seq = torch.tensor([[1, 2, 0, 0], [1, 2, 3, 4], [5, 0, 0, 0]])
    out, new_len = append_at_end(seq, torch.tensor([2, 4, 1]), torch.tensor([9, 9, 9]))
    assert out.tolist() == [[1, 2, 9, 0], [2, 3, 4, 9], [5, 9, 0, 0]]
    assert new_len.tolist() == [3, 4, 2]


# ---------------------------------------------------------------- inference


@pytest.fixture(scope="module")
def trained_like():
    config, model, train, valid, test = nova()
    model.eval()
    return config, model, train, valid, test


def test_inference_keeps_the_most_recent_items(trained_like):
    _, model, _, _, test = trained_like
    batch = eval_batch(test)
    seq, length = batch["item_id_list"], batch["item_length"]
    max_len = seq.shape[1]
    rows = torch.arange(len(seq))
    full = length == max_len
    assert full.any() and (~full).any()

    newest = seq.clone()
    newest[rows, length - 1] = seq[rows, length - 1] % (model.n_items - 1) + 1
    oldest = seq.clone()
    oldest[:, 0] = seq[:, 0] % (model.n_items - 1) + 1
    with torch.no_grad():
        base = model.full_sort_predict(batch)
        new = model.full_sort_predict(with_values(batch, item_id_list=newest))
        old = model.full_sort_predict(with_values(batch, item_id_list=oldest))
    changed = ~torch.isclose(base, new, atol=1e-5).all(1)
    assert changed.all()  # the newest item counts, full rows included
    # A full row drops its oldest item to make room for the mask; the others keep it.
    assert torch.allclose(base[full], old[full], atol=1e-6)
    assert (~torch.isclose(base[~full], old[~full], atol=1e-5).all(1)).all()


def test_inference_does_not_read_the_targets_own_values(trained_like):
    _, model, _, _, test = trained_like
    batch = eval_batch(test)
    other = with_values(
        batch,
        rating=batch["rating"].flip(0),
        timestamp=batch["timestamp"].flip(0),
        behavior_type=batch["behavior_type"].flip(0),
        item_id=batch["item_id"].flip(0),
    )
    with torch.no_grad():
        assert torch.equal(model.full_sort_predict(batch), model.full_sort_predict(other))
    assert model.side.item_category[model.mask_token] == 0  # the mask token has no item features


def test_full_sort_predict_equals_predict_item_by_item(trained_like):
    _, model, _, _, test = trained_like
    batch = eval_batch(test)[:8]
    with torch.no_grad():
        full = model.full_sort_predict(batch)  # [B, N]
        b, n = full.shape
        expanded = batch.repeat_interleave(n)
        expanded.update(Interaction({"item_id": torch.arange(n).repeat(b)}))
        single = model.predict(expanded).view(b, n)
    assert full.shape == (8, model.n_items)
    assert torch.allclose(full, single, atol=1e-5)


def test_save_load_gives_the_same_scores(trained_like, tmp_path):
    config, model, train, _, test = trained_like
    batch = eval_batch(test)
    path = tmp_path / "nova.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    torch.manual_seed(123)  # a fresh model with other weights
    fresh = NOVABERT(config, train._dataset).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh.full_sort_predict(batch), model.full_sort_predict(batch))
        fresh.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
        assert torch.equal(fresh.full_sort_predict(batch), model.full_sort_predict(batch))


def test_same_seed_same_loss(trained_like):
    _, model, train, _, _ = trained_like
    batch = next(iter(train))
    model.train()
    try:
        torch.manual_seed(7)
        first = model.calculate_loss(batch)
        torch.manual_seed(7)
        assert torch.equal(first, model.calculate_loss(batch))
    finally:
        model.eval()


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("name", ["NOVABERT", "AttnBERT4Rec"])
def test_loss_falls_on_the_tiny_fixture(name, tmp_path):
    from recbole_attn.config import get_model
    from recbole_attn.trainer import get_trainer

    extra = SIDE if name == "NOVABERT" else {}
    config, model, train_data, valid_data, _ = build(
        name,
        epochs=20,
        stopping_step=100,
        learning_rate=0.01,
        lr_scheduler="constant",  # the YAML's schedule (100 warm-up steps, decay to 0) is
        warmup_steps=0,  # for longer runs than these 20 short epochs
        checkpoint_dir=str(tmp_path),
        **extra,
    )
    trainer = get_trainer(config["MODEL_TYPE"], name, get_model(name))(config, model)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    losses = trainer.train_loss_dict
    assert losses[max(losses)] < 0.85 * losses[0], losses


@pytest.mark.parametrize("attention", ["nova", "invasive"])
@pytest.mark.parametrize("fusion", ["add", "concat", "gating"])
def test_every_fusion_type_runs_forward_and_backward(fusion, attention):
    _, model, train, valid, _ = nova(
        fusion_type=fusion, attention_type=attention, behavior_float_encoding="linear"
    )
    model.train()
    loss = model.calculate_loss(next(iter(train)))
    loss.backward()
    assert torch.isfinite(loss)
    for name in ("category",):
        assert model.side.item_side[name].weight.grad.abs().sum() > 0, name
    for name in ("rating", "timestamp", "behavior_type"):
        assert model.side.behavior_side[name].weight.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model.full_sort_predict(eval_batch(valid))).all()


def test_attnbert4rec_is_novabert_without_side_information():
    _, bert, _, valid, _ = build("AttnBERT4Rec")
    _, plain, _, _, _ = build(
        "NOVABERT",
        item_side_fields=[],
        behavior_side_fields=[],
        attention_type="invasive",
        fusion_type="add",
    )
    plain.load_state_dict(bert.state_dict())
    bert.eval(), plain.eval()
    batch = eval_batch(valid)
    with torch.no_grad():
        assert torch.equal(bert.full_sort_predict(batch), plain.full_sort_predict(batch))


def test_attnbert4rec_refuses_side_information():
    with pytest.raises(ConfigError, match="item_side_fields.*NOVABERT"):
        build("AttnBERT4Rec", item_side_fields=["category"], load_col=LOAD_COL)
    with pytest.raises(ConfigError, match="attention_type"):
        build("AttnBERT4Rec", attention_type="nova")


# ---------------------------------------------------------------- bad input


def test_unknown_item_field_is_named_with_the_available_fields():
    with pytest.raises(ConfigError, match=r"'genre'.*Available item fields: category"):
        nova(item_side_fields=["genre"])


def test_item_fields_without_an_item_file_loaded_say_how_to_load_them():
    with pytest.raises(ConfigError, match=r"'category'.*none.*load_col"):
        build("NOVABERT", item_side_fields=["category"], behavior_side_fields=[])


def test_unknown_behavior_field_is_named_with_the_available_fields():
    with pytest.raises(ConfigError, match=r"'category'.*rating, timestamp, behavior_type"):
        nova(behavior_side_fields=["category"])


def test_item_field_of_an_unsupported_type_is_refused(tmp_path):
    from recbole.utils import init_seed

    from recbole_attn.config import Config
    from recbole_attn.quick_start import prepare

    folder = tmp_path / "vec"
    folder.mkdir()
    shutil.copy(FIXTURES / "tiny" / "tiny.inter", folder / "vec.inter")
    lines = ["item_id:token\tembedding:float_seq"]
    lines += [f"{i}\t{i * 0.1:.1f} 1.0" for i in range(1, 61)]
    (folder / "vec.item").write_text("\n".join(lines) + "\n")
    cfg = tiny_config(
        data_path=str(tmp_path),
        load_col={
            "inter": ["user_id", "item_id", "rating", "timestamp"],
            "item": ["item_id", "embedding"],
        },
        item_side_fields=["embedding"],
    )
    config = Config(model="NOVABERT", dataset="vec", config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    message = r"'embedding' has type float_seq.*token, token_seq, float"
    with pytest.raises(ConfigError, match=message):
        prepare(config, log=False, with_trainer=False)


@pytest.mark.parametrize(
    "key, value, choices",
    [
        ("fusion_type", "sum", "add, concat, gating"),
        ("attention_type", "cross", "nova, invasive"),
        ("behavior_float_encoding", "log", "bucket, linear"),
    ],
)
def test_unknown_choice_lists_the_choices(key, value, choices):
    with pytest.raises(ConfigError, match=f"{key} must be one of {choices}, got '{value}'"):
        nova(**{key: value})
