"""AttRec: invariants of the model and its training."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_attn.config import ConfigError
from recbole_attn.model.sequential_recommender.attrec import (
    AttRec,
    clip_to_unit_ball,
    timing_signal,
)
from conftest import build


@pytest.fixture(scope="module")
def attrec():
    config, model, train_data, valid_data, test_data = build("AttRec", seq_window=4, diagonal_mask="before_softmax")
    model.eval()
    batch = next(iter(train_data))
    return config, model, batch, train_data


def test_padded_positions_change_nothing(attrec):
    _, model, batch, _ = attrec
    seq, length = batch["item_id_list"], batch["item_length"]
    noisy = seq.clone()
    pad = torch.arange(seq.shape[1]).unsqueeze(0) >= length.unsqueeze(1)
    assert pad.any()
    noisy[pad] = torch.randint(1, model.n_items, (int(pad.sum()),))
    with torch.no_grad():
        assert torch.equal(model(seq, length), model(noisy, length))


def test_only_the_last_window_of_items_matters(attrec):
    _, model, batch, _ = attrec
    seq, length = batch["item_id_list"], batch["item_length"]
    long_rows = length > model.seq_window
    assert long_rows.any()
    older = torch.arange(seq.shape[1]).unsqueeze(0) < (length - model.seq_window).unsqueeze(1)
    changed = seq.clone()
    changed[older] = torch.randint(1, model.n_items, (int(older.sum()),))
    recent = seq.clone()
    last = (length - 1).clamp(min=0)
    recent[torch.arange(len(seq)), last] = (seq[torch.arange(len(seq)), last] % (model.n_items - 1)) + 1
    with torch.no_grad():
        base = model(seq, length)
        assert torch.equal(base, model(changed, length))
        assert not torch.allclose(base, model(recent, length))


def test_attention_masks_padding_and_the_diagonal_before_softmax(attrec):
    _, model, batch, _ = attrec
    with torch.no_grad():
        attn, _, mask = model.attention(batch["item_id_list"], batch["item_length"])
    assert torch.allclose(attn.sum(-1), torch.ones(attn.shape[:2]))
    assert (attn * ~mask.unsqueeze(1)).abs().max() == 0  # no weight on padding keys
    several = mask.sum(1) >= 2
    diag = attn.diagonal(dim1=1, dim2=2)
    assert (diag[several] * mask[several]).abs().max() == 0  # no item attends to itself
    single = mask.sum(1) == 1
    if single.any():  # a lone item falls back to itself
        assert torch.allclose(diag[single][mask[single]], torch.ones(int(single.sum())))


def test_full_sort_predict_equals_predict_item_by_item(attrec):
    _, model, batch, _ = attrec
    with torch.no_grad():
        full = model.full_sort_predict(batch)  # [B, N]
        b, n = full.shape
        expanded = batch.repeat_interleave(n)
        expanded.update(type(batch)({"item_id": torch.arange(n).repeat(b)}))
        single = model.predict(expanded).view(b, n)
    assert torch.allclose(full, single, atol=1e-5)


def test_dist_score_is_the_papers_formula(attrec):
    _, model, batch, _ = attrec
    with torch.no_grad():
        m = model(batch["item_id_list"], batch["item_length"])
        u = model._clip(model.user_embedding(batch["user_id"]))
        v = model._clip(model.item_embedding(batch["item_id"]))
        x = model._clip(model.seq_item_embedding(batch["item_id"]))
        w = model.omega
        y = w * ((u - v) ** 2).sum(-1) + (1 - w) * ((m - x) ** 2).sum(-1)
        assert torch.allclose(model.predict(batch), -y, atol=1e-6)


def test_hinge_loss_is_zero_once_negatives_are_far_enough(attrec):
    _, model, batch, _ = attrec
    with torch.no_grad():
        loss = model.calculate_loss(batch)
        m = model(batch["item_id_list"], batch["item_length"])
        pos = model._score(batch["user_id"], m, batch["item_id"])
        neg = model._score(batch["user_id"], m, batch["neg_item_id"])
        hinge = torch.clamp(neg - pos + model.margin, min=0)
        expected = hinge.sum() if model.loss_reduction == "sum" else hinge.mean()
    assert torch.allclose(loss, expected + model.regulariser())


def test_clipping_keeps_vectors_in_the_unit_ball():
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    out = clip_to_unit_ball(x)
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(out[1], x[1])


def test_timing_signal_is_the_sinusoid():
    sig = timing_signal(5, 8)
    assert sig.shape == (5, 8)
    assert torch.allclose(sig[0, 0::2], torch.zeros(4)) and torch.allclose(sig[0, 1::2], torch.ones(4))
    assert math.isclose(sig[3, 2].item(), math.sin(3 / 10000 ** (2 / 8)), rel_tol=1e-5)


@pytest.mark.parametrize("mode", ["dist", "inner"])
def test_loss_falls_on_the_tiny_fixture(mode, tmp_path):
    from recbole_attn.trainer import get_trainer

    config, model, train_data, valid_data, _ = build(
        "AttRec", score_mode=mode, epochs=8, checkpoint_dir=str(tmp_path),
        # inner products of std-0.001 vectors have gradients of that size: the scaled init
        embedding_init="code" if mode == "dist" else "scaled",
    )
    trainer = get_trainer(config["MODEL_TYPE"], "AttRec", AttRec)(config, model)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    losses = trainer.train_loss_dict
    assert losses[max(losses)] < 0.8 * losses[0], losses


def test_unknown_score_mode_lists_the_choices():
    with pytest.raises(ConfigError, match="dist, inner"):
        build("AttRec", score_mode="cosine")


def test_data_without_user_ids_is_refused_clearly():
    config, _, train_data, _, _ = build("AttRec")

    class NoUsers:
        field2type = {"item_id": None, "item_id_list": None}

        def num(self, field):
            return train_data._dataset.num(field)

    with pytest.raises(ConfigError, match="user id field.*USER_ID_FIELD"):
        AttRec(config, NoUsers())


@pytest.mark.parametrize("score_mode", ["dist", "inner"])
def test_score_terms_sum_to_the_score(score_mode):
    _, model, train_data, _, _ = build("AttRec", score_mode=score_mode)
    model.eval()
    batch = next(iter(train_data))
    items = torch.randint(1, model.n_items, (len(batch), 7))
    with torch.no_grad():
        terms = model.score_terms(batch, items)  # [B, 7, 2d]
        full = model.full_sort_predict(batch)  # [B, N]
    assert terms.shape == (len(batch), 7, 2 * model.item_embedding.embedding_dim)
    torch.testing.assert_close(terms.sum(-1), full.gather(1, items), rtol=1e-4, atol=1e-4)


def test_diagonal_masked_after_softmax_as_the_code():
    """Code: softmax over the window's real items, then each item's weight on itself set to
    0 and the row not renormalised: rows sum to 1 - (the self weight of the full softmax)."""
    _, model, train_data, _, _ = build("AttRec", seq_window=4, diagonal_mask="after_softmax")
    model.eval()
    batch = next(iter(train_data))
    seq, length = batch["item_id_list"], batch["item_length"]
    with torch.no_grad():
        attn, x, mask = model.attention(seq, length)
        qk = torch.relu(model.query_key(x + model.timing))
        full = (qk @ qk.transpose(1, 2) / math.sqrt(model.embedding_size)).masked_fill(
            ~mask.unsqueeze(1), float("-inf")).softmax(-1)
    assert (attn * ~mask.unsqueeze(1)).abs().max() == 0  # no weight on padding keys
    assert attn.diagonal(dim1=1, dim2=2).abs().max() == 0
    real = mask.unsqueeze(-1).expand_as(attn)[..., 0]  # rows of real queries
    expected = 1 - full.diagonal(dim1=1, dim2=2)
    torch.testing.assert_close(attn.sum(-1)[real], expected[real])
    assert (attn.sum(-1)[real] < 1).all()


def test_code_embedding_init_is_the_truncated_normal():
    _, code, *_ = build("AttRec", embedding_init="code")
    _, scaled, *_ = build("AttRec", embedding_init="scaled")
    w = code.seq_item_embedding.weight[1:]
    assert w.abs().max() <= 0.002 and 0.0005 < w.std() < 0.0011  # std 0.001, cut at 2 std
    assert torch.equal(code.seq_item_embedding.weight[0], torch.zeros(code.embedding_size))
    assert math.isclose(scaled.seq_item_embedding.weight[1:].std().item(),
                        1 / math.sqrt(scaled.embedding_size), rel_tol=0.1)


def test_summed_loss_and_the_codes_l2_terms():
    _, model, train_data, _, _ = build("AttRec", loss_reduction="mean", reg_weight=0.0, attention_reg_weight=0.0)
    batch = next(iter(train_data))
    mean = model.calculate_loss(batch)
    model.loss_reduction = "sum"
    torch.testing.assert_close(model.calculate_loss(batch), mean * len(batch))
    model.reg_weight, model.attention_reg_weight = 0.001, 0.01
    tables = sum(t.pow(2).sum() for t in (model.user_embedding.weight, model.item_embedding.weight,
                                          model.seq_item_embedding.weight))
    reg = 0.001 * tables / 2 + 0.01 * model.query_key.weight.pow(2).sum() / 2
    torch.testing.assert_close(model.calculate_loss(batch), mean * len(batch) + reg)


@pytest.mark.parametrize("key, value", [("diagonal_mask", "after"), ("embedding_init", "xavier"),
                                        ("loss_reduction", "avg")])
def test_bad_code_options_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        build("AttRec", **{key: value})
