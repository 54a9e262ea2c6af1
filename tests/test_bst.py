"""BST: invariants of the model and its training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from recbole_attn.config import ConfigError
from recbole_attn.model.context_aware_recommender.bst import BST
from conftest import build, scramble_padding

ITEM_COLS = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "category"]}
SRC = Path(__file__).resolve().parents[1] / "recbole_attn"


def bst(**overrides):
    kw = dict(
        load_col=ITEM_COLS,
        embedding_size=8,
        n_heads=2,
        mlp_hidden_size=[32, 16],
        metrics=["AUC", "GAUC", "LogLoss"],  # tiny.yaml sets ranking metrics
        valid_metric="AUC",
        MAX_ITEM_LIST_LENGTH=6,
        time_unit=100.0,  # tiny's gaps are 1e2-1e5 seconds: several buckets
    )
    kw.update(overrides)
    return build("BST", **kw)


def _clone(batch):
    return type(batch)({k: v.clone() for k, v in batch.interaction.items()})


@pytest.fixture(scope="module")
def trained():
    config, model, train_data, valid_data, _ = bst()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for batch in train_data:
        opt.zero_grad()
        model.calculate_loss(batch).backward()
        opt.step()
    model.eval()
    return config, model, next(iter(train_data))


def test_padded_history_positions_change_no_score(trained):
    _, model, batch = trained
    noisy = scramble_padding(
        batch,
        item_id_list=lambda n: torch.randint(1, model.n_items, (n,)),
        timestamp_list=lambda n: torch.rand(n) * 1e6,
    )
    with torch.no_grad():
        assert torch.allclose(model(batch), model(noisy), atol=1e-5)
        assert torch.allclose(model.attention_weights(batch), model.attention_weights(noisy), atol=1e-6)


def test_position_feature_is_the_bucketised_time_gap(trained):
    _, model, batch = trained
    row = int(torch.argmax(batch["item_length"]))
    one = batch[row : row + 1]
    shifted = _clone(one)  # shifting all times together changes no gap: same score
    shifted["timestamp"] += 1e4
    shifted["timestamp_list"] += 1e4
    older = _clone(one)  # behaviours much older: larger gaps, other buckets
    older["timestamp_list"] -= 1e6
    with torch.no_grad():
        assert torch.allclose(model(one), model(shifted), atol=1e-5)
        assert not torch.allclose(model(one), model(older), atol=1e-4)


def test_attention_weights_of_the_target(trained):
    _, model, batch = trained
    with torch.no_grad():
        w = model.attention_weights(batch)
    pad = torch.arange(w.shape[1]).unsqueeze(0) >= batch["item_length"].unsqueeze(1)
    assert w.shape == batch["item_id_list"].shape and (w[pad] == 0).all()
    assert (w >= 0).all() and (w.sum(1) <= 1 + 1e-5).all() and (w.sum(1) > 0).all()


def test_full_sort_predict_equals_predict_item_by_item(trained):
    _, model, batch = trained
    model.full_sort_chunk = 9
    rows = batch[:3]
    with torch.no_grad():
        full = model.full_sort_predict(rows)
        b, n = full.shape
        single = torch.stack(
            [model.predict(type(rows)({**rows[i : i + 1].interaction, "item_id": torch.tensor([j])})) for i in range(b) for j in range(n)]
        ).view(b, n)
    assert n == model.n_items and torch.allclose(full, single, atol=1e-5)


def test_no_time_field_is_refused_clearly_unless_order_positions():
    config, _, train_data, _, _ = bst()
    real = train_data._dataset

    class NoTime:  # RecBole's sequential data needs a time field to sort; a custom one may not
        field2type = {f: t for f, t in real.field2type.items() if not f.startswith("timestamp")}

        def num(self, field):
            return real.num(field)

    with pytest.raises(ConfigError, match=r"TIME_FIELD='timestamp'.*position_feature: order"):
        BST(config, NoTime())
    config, model, train_data, _, _ = bst(position_feature="order")
    model.eval()
    batch = next(iter(train_data))
    moved = _clone(batch)
    moved["timestamp_list"] -= 1e6  # order positions ignore the times
    with torch.no_grad():
        assert torch.equal(model(batch), model(moved))
    assert torch.isfinite(model.calculate_loss(batch))


def test_bad_item_or_user_field_and_bad_options_name_them():
    with pytest.raises(ConfigError, match=r"item feature field 'genre'.*category"):
        bst(item_fields=["genre"])
    with pytest.raises(ConfigError, match=r"user feature field 'age'"):
        bst(user_fields=["age"])
    with pytest.raises(ConfigError, match="time, order"):
        bst(position_feature="sinusoid")
    with pytest.raises(ConfigError, match="n_heads=5"):
        bst(n_heads=5)
    for key in ("position_combine", "position_init"):
        with pytest.raises(ConfigError, match=f"{key} must be one of"):
            bst(**{key: "sum"})


def test_transformer_input_starts_as_the_item_embedding_not_drowned_by_position():
    """Xavier over a 32-row position table starts it far above large-vocabulary item tables
    (std ~ sqrt(2 / rows)); the post-norm LayerNorm then leaves the item content a few percent
    of each token and BST does not learn (Taobao head AUC 0.50). The position part starts at 0."""
    _, model, train_data, _, _ = bst()
    batch = next(iter(train_data))
    x, mask = model._sequence(batch)
    d_item = model.item_embedding.out_dim
    assert model.position_combine == "concat" and x.shape[-1] == d_item + model.embedding_size
    items = x[..., :d_item]
    assert (x[..., d_item:] == 0).all()  # position part
    assert torch.equal(items[:, -1], model.item_embedding(batch["item_id"]))  # the target's token
    _, old, _, _, _ = bst(position_init="xavier")
    assert (old._sequence(batch)[0][..., d_item:] != 0).any()


def test_target_item_reaches_the_mlp_directly():
    _, model, train_data, _, _ = bst()
    model.eval()
    batch = next(iter(train_data))
    other = _clone(batch)
    other["item_id"] = other["item_id"].roll(1)
    with torch.no_grad():
        x, _, _ = model._encode(batch)
        assert model.mlp.net[0].in_features == x.flatten(1).shape[1] + model.item_embedding.out_dim + (
            model.user_embedding.out_dim if model.user_embedding is not None else 0
        )
        model.blocks = torch.nn.ModuleList()  # even without the transformer path the score sees the target
        model.position_embedding.weight.zero_()
        changed = model(batch) != model(other)
    assert changed[batch["item_id"] != other["item_id"]].all()


def test_save_load_same_scores_and_same_seed_same_numbers(trained, tmp_path):
    _, model, batch = trained
    path = tmp_path / "bst.pth"
    torch.save(model.state_dict(), path)
    _, fresh, _, _, _ = bst(seed=7)
    fresh.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh.predict(batch), model.predict(batch))
        fresh.load_state_dict(torch.load(path))
        assert torch.equal(fresh.predict(batch), model.predict(batch))
    _, a, _, _, _ = bst()
    _, b, _, _, _ = bst()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_loss_falls_and_evaluation_gives_auc_gauc_logloss(tmp_path):
    from recbole_attn.trainer import get_trainer

    config, model, train_data, valid_data, test_data = bst(
        epochs=10, learning_rate=0.003, train_batch_size=64, dropout_prob=0.0, checkpoint_dir=str(tmp_path)
    )
    trainer = get_trainer(config["MODEL_TYPE"], "BST", BST)(config, model)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    losses = trainer.train_loss_dict
    assert losses[max(losses)] < 0.8 * losses[0], losses
    result = trainer.evaluate(test_data, load_best_model=True)
    assert set(result) == {"auc", "gauc", "logloss"}


def test_every_config_key_the_model_reads_is_in_its_yaml():
    code = (SRC / "model" / "context_aware_recommender" / "bst.py").read_text()
    keys = set(re.findall(r'config\["(\w+)"\]', code)) - {"LABEL_FIELD", "TIME_FIELD", "LIST_SUFFIX", "dataset"}
    defaults = yaml.safe_load((SRC / "properties" / "model" / "BST.yaml").read_text())
    assert keys and keys <= set(defaults), keys - set(defaults)
