"""AttnDIN: invariants of the model, its regulariser and its training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from recbole_attn.config import ConfigError
from recbole_attn.model.context_aware_recommender.din import AttnDIN
from conftest import build, scramble_padding

ITEM_COLS = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "category"]}
SRC = Path(__file__).resolve().parents[1] / "recbole_attn"


def din(**overrides):
    kw = dict(
        load_col=ITEM_COLS,
        embedding_size=8,
        attention_mlp=[8],
        mlp_hidden_size=[16, 8],
        metrics=["AUC", "GAUC", "LogLoss"],  # tiny.yaml sets ranking metrics
        valid_metric="AUC",
    )
    kw.update(overrides)
    return build("AttnDIN", **kw)


@pytest.fixture(scope="module")
def trained():
    """A model after a few steps (non-trivial Dice statistics and alpha) and a batch."""
    config, model, train_data, valid_data, test_data = din()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for batch in train_data:
        opt.zero_grad()
        model.calculate_loss(batch).backward()
        opt.step()
    model.eval()
    return config, model, next(iter(train_data)), valid_data


@pytest.mark.parametrize("training", [False, True])
def test_padded_history_positions_change_no_score(trained, training):
    _, model, batch, _ = trained
    noisy = scramble_padding(batch, item_id_list=lambda n: torch.randint(1, model.n_items, (n,)))
    model.train(training)
    try:
        with torch.no_grad():
            assert torch.allclose(model(batch), model(noisy), atol=1e-6)
            assert torch.equal(model.attention_weights(batch), model.attention_weights(noisy))
    finally:
        model.eval()


def test_attention_weights_are_zero_at_padding_and_depend_on_the_target(trained):
    _, model, batch, _ = trained
    with torch.no_grad():
        w = model.attention_weights(batch)
        other = type(batch)({k: v.clone() for k, v in batch.interaction.items()})
        other["item_id"] = other["item_id"] % (model.n_items - 1) + 1
        w2 = model.attention_weights(other)
    pad = torch.arange(w.shape[1]).unsqueeze(0) >= batch["item_length"].unsqueeze(1)
    assert w.shape == batch["item_id_list"].shape and (w[pad] == 0).all()
    assert not torch.allclose(w, w2)


def test_full_sort_predict_equals_predict_item_by_item(trained):
    _, model, batch, _ = trained
    model.full_sort_chunk = 7  # several chunks, the last one short
    rows = batch[:5]
    with torch.no_grad():
        full = model.full_sort_predict(rows)
        b, n = full.shape
        assert n == model.n_items
        single = torch.stack(
            [model.predict(type(rows)({**rows[i : i + 1].interaction, "item_id": torch.tensor([j])})) for i in range(b) for j in range(n)]
        ).view(b, n)
    assert torch.allclose(full, single, atol=1e-5)


def test_mba_touches_only_rows_in_the_batch_scaled_by_frequency():
    _, model, train_data, _, _ = din(reg_type="mba", reg_weight=0.5)
    batch = next(iter(train_data))
    model.zero_grad()
    model.regularization(batch).backward()
    seq, length = batch["item_id_list"], batch["item_length"]
    mask = torch.arange(seq.shape[1]).unsqueeze(0) < length.unsqueeze(1)
    items = torch.unique(torch.cat([seq[mask], batch["item_id"]]))
    table = model.item_embedding.id_embedding.weight
    in_batch = torch.zeros(model.n_items, dtype=torch.bool)
    in_batch[items] = True
    in_batch[0] = False
    grad = table.grad
    assert (grad[~in_batch] == 0).all()  # rows not read in the batch: untouched
    freq = model.freq_item_id
    counts = torch.bincount(train_data._dataset.inter_feat["item_id"], minlength=model.n_items).float()
    assert torch.equal(freq, counts.clamp(min=1))
    expected = 2 * 0.5 * table[in_batch] / freq[in_batch].unsqueeze(1)
    assert torch.allclose(grad[in_batch], expected, atol=1e-6)
    assert freq[in_batch].unique().numel() > 1  # the scaling is really per row
    cat_grad = model.item_embedding.embeddings["category"].weight.grad
    cats = torch.unique(model.item_embedding.table_category[items[items > 0]])
    untouched = torch.ones(len(cat_grad), dtype=torch.bool)
    untouched[cats] = False
    assert (cat_grad[untouched] == 0).all() and (cat_grad[cats[cats > 0]] != 0).any()


def test_l2_touches_every_row_and_none_is_zero():
    _, model, train_data, _, _ = din(reg_type="l2", reg_weight=0.5)
    batch = next(iter(train_data))
    reg = model.regularization(batch)
    table = model.item_embedding.id_embedding.weight
    cat = model.item_embedding.embeddings["category"].weight
    assert torch.allclose(reg, 0.5 * (table.pow(2).sum() + cat.pow(2).sum()))
    model.reg_type = "none"
    assert model.regularization(batch) == 0


def test_unknown_reg_type_lists_the_choices():
    with pytest.raises(ConfigError, match="mba, l2, none"):
        din(reg_type="l1")


def test_bad_item_or_user_field_names_it():
    with pytest.raises(ConfigError, match=r"item feature field 'genre'.*category"):
        din(item_fields=["genre"])
    with pytest.raises(ConfigError, match=r"user feature field 'age'"):
        din(user_fields=["age"])


def test_save_load_same_scores_and_same_seed_same_numbers(trained, tmp_path):
    _, model, batch, _ = trained
    path = tmp_path / "din.pth"
    torch.save(model.state_dict(), path)
    _, fresh, _, _, _ = din(seed=7)
    fresh.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh.predict(batch), model.predict(batch))
        fresh.load_state_dict(torch.load(path))
        assert torch.equal(fresh.predict(batch), model.predict(batch))
    _, a, _, _, _ = din()
    _, b, _, _, _ = din()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_loss_falls_and_evaluation_gives_auc_gauc_logloss(tmp_path):
    from recbole_attn.trainer import get_trainer

    config, model, train_data, valid_data, test_data = din(epochs=12, learning_rate=0.01, checkpoint_dir=str(tmp_path))
    assert [m.lower() for m in config["metrics"]] == ["auc", "gauc", "logloss"]
    trainer = get_trainer(config["MODEL_TYPE"], "AttnDIN", AttnDIN)(config, model)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    losses = trainer.train_loss_dict
    assert losses[max(losses)] < 0.8 * losses[0], losses
    result = trainer.evaluate(test_data, load_best_model=True)
    assert set(result) == {"auc", "gauc", "logloss"}
    assert 0 <= result["gauc"] <= 1 and result["logloss"] > 0


def test_every_config_key_the_model_reads_is_in_its_yaml():
    code = (SRC / "model" / "context_aware_recommender" / "din.py").read_text()
    keys = set(re.findall(r'config\["(\w+)"\]', code)) - {"LABEL_FIELD"}
    defaults = yaml.safe_load((SRC / "properties" / "model" / "AttnDIN.yaml").read_text())
    assert keys and keys <= set(defaults), keys - set(defaults)


def _mlp_raw_input(model, batch) -> torch.Tensor:
    """The prediction MLP's input before its normalisation [B, width]."""
    seen = []
    handle = model.mlp_norm.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    try:
        model(batch)
    finally:
        handle.remove()
    return seen[0]


def test_mlp_input_is_u_target_and_their_product_in_the_reference_layout(trained):
    _, model, batch, _ = trained
    d = model.item_embedding.out_dim
    with torch.no_grad():
        x = _mlp_raw_input(model, batch)
        pooled, _, target = model._attend(batch)
    assert model.user_embedding is None and x.shape == (len(batch), 3 * d)  # code: [u, e_a, u * e_a]
    u = model.interest(pooled)
    assert torch.allclose(x[:, :d], u) and torch.equal(x[:, d : 2 * d], target)
    assert torch.allclose(x[:, 2 * d :], u * target)
    # zeroing the pooled-interest projection zeroes the product slots, not the target slots
    proj = model.interest[1]
    saved = [p.detach().clone() for p in proj.parameters()]
    with torch.no_grad():
        for p in proj.parameters():
            p.zero_()
        x0 = _mlp_raw_input(model, batch)
        for p, v in zip(proj.parameters(), saved):
            p.copy_(v)
    assert (x0[:, 2 * d :] == 0).all() and torch.equal(x0[:, d : 2 * d], target)
    assert (x[:, 2 * d :] != 0).any()
    _, paper, _, _, _ = din(mlp_product=False, pooled_projection=False)
    with torch.no_grad():
        assert _mlp_raw_input(paper.eval(), batch).shape == (len(batch), 2 * d)


def test_default_widths_are_the_reference_codes():
    """The code embeds item id and category in 64 each (hidden_units 128); the paper's 12
    is an option."""
    defaults = yaml.safe_load((SRC / "properties" / "model" / "AttnDIN.yaml").read_text())
    assert defaults["embedding_size"] == 64
    assert defaults["attention_mlp"] == [80, 40] and defaults["mlp_hidden_size"] == [80, 40]
    kw = dict(load_col=ITEM_COLS, metrics=["AUC"], valid_metric="AUC")
    _, model, _, _, _ = build("AttnDIN", embedding_size=defaults["embedding_size"], **kw)  # tiny.yaml: 16
    assert model.item_embedding.out_dim == 128 and model.mlp.net[0].in_features == 3 * 128
    _, paper, _, _, _ = build("AttnDIN", embedding_size=12, **kw)
    assert paper.item_embedding.out_dim == 24


def test_parameter_count_matches_the_reference_layout():
    _, model, _, _, _ = din()
    e, d = 8, 16  # embedding_size; D = item id + category
    n_items, n_cats = model.n_items, model.item_embedding.embeddings["category"].num_embeddings
    expected = {
        "item_embedding": (n_items + n_cats) * e,
        "attention": (4 * d * 8 + 8) + (8 + 1),  # MLP [8] (sigmoid) + score
        "interest": 2 * d + (d * d + d),  # hist_bn + hist_fcn
        "mlp_norm": 2 * 3 * d,  # b1 on [u, e_a, u * e_a]
        "mlp": (3 * d * 16 + 16 + 16) + (16 * 8 + 8 + 8),  # Linear + Dice alpha per layer
        "head": 8 + 1,
        "item_bias": n_items,
    }
    got = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    assert {k: got.get(k, 0) for k in expected} == expected
    assert sum(p.numel() for p in model.parameters()) == sum(expected.values())


def test_batchnorm_uses_running_statistics_in_eval(trained):
    _, model, batch, _ = trained
    norm = model.mlp_norm
    assert isinstance(norm, torch.nn.BatchNorm1d) and norm.num_batches_tracked > 0
    assert not torch.allclose(norm.running_mean, torch.zeros_like(norm.running_mean))
    with torch.no_grad():
        x = _mlp_raw_input(model, batch)
        expected = (x - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias
        assert torch.allclose(model.mlp_input(batch), expected, atol=1e-5)
        # a row's score does not depend on the other rows of its batch
        alone = torch.cat([model.predict(batch[i : i + 1]) for i in range(6)])
        assert torch.allclose(alone, model.predict(batch)[:6], atol=1e-6)
        model.train()
        try:
            trained_mode = model.mlp_input(batch)
        finally:
            model.eval()
    assert torch.allclose(trained_mode.mean(0), norm.bias, atol=1e-4)  # batch statistics in training


def test_item_bias_adds_to_the_logit_and_starts_at_zero(trained):
    _, fresh, _, _, _ = din()
    assert (fresh.item_bias.weight == 0).all()
    _, model, batch, _ = trained
    with torch.no_grad():
        before = model(batch)
        item = int(batch["item_id"][0])
        model.item_bias.weight[item] += 1.5
        after = model(batch)
        model.item_bias.weight[item] -= 1.5
    hit = batch["item_id"] == item
    assert torch.allclose(after[hit], before[hit] + 1.5, atol=1e-5) and torch.equal(after[~hit], before[~hit])


def test_mlp_input_norm_choices():
    from recbole_attn.layers import ChannelAffine

    _, model, _, _, _ = din(mlp_input_norm="affine")
    assert isinstance(model.mlp_norm, ChannelAffine) and isinstance(model.interest[0], ChannelAffine)
    _, model, _, _, _ = din(mlp_input_norm="none", pooled_projection=False)
    assert isinstance(model.mlp_norm, torch.nn.Identity) and isinstance(model.interest, torch.nn.Identity)
    with pytest.raises(ConfigError, match="batch, affine, none"):
        din(mlp_input_norm="layer")


def test_mlp_hidden_norm_batch_normalises_each_hidden_layer_and_keeps_the_invariants():
    from recbole_attn.layers import RowBatchNorm

    _, model, train_data, _, _ = din(mlp_hidden_norm="batch")
    norms = [m for m in model.mlp.net if isinstance(m, RowBatchNorm)]
    assert [n.num_features for n in norms] == [16, 8]  # one per hidden layer, with scale and shift
    assert all(n.weight is not None for n in norms)
    _, default, _, _, _ = din()
    assert not any(isinstance(m, RowBatchNorm) for m in default.mlp.net)  # default: the code's MLP
    batch = next(iter(train_data))
    model.calculate_loss(batch).backward()  # one training step moves the running statistics
    assert norms[0].num_batches_tracked == 1
    model.eval()
    noisy = scramble_padding(batch, item_id_list=lambda n: torch.randint(1, model.n_items, (n,)))
    with torch.no_grad():
        assert torch.allclose(model(batch), model(noisy), atol=1e-6)
        alone = torch.cat([model.predict(batch[i : i + 1]) for i in range(4)])
        assert torch.allclose(alone, model.predict(batch)[:4], atol=1e-6)
        rows = batch[:2]
        full = model.full_sort_predict(rows)
        pick = rows["item_id"]
        assert torch.allclose(full[torch.arange(2), pick], model.predict(rows), atol=1e-5)
    with pytest.raises(ConfigError, match="mlp_hidden_norm"):
        din(mlp_hidden_norm="layer")
