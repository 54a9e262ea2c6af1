"""Shared layers: Dice, MLP, TargetAttention, feature embeddings, time_bucket."""

from __future__ import annotations

import pytest
import torch

from recbole_attn.config import ConfigError
from recbole_attn.layers import (
    MLP,
    Dice,
    ItemFeatureEmbedding,
    TargetAttention,
    UserFeatureEmbedding,
    activation_layer,
    time_bucket,
)
from conftest import build

ITEM_COLS = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "category"]}


def test_dice_alpha_is_a_parameter_that_learns():
    torch.manual_seed(0)
    dice = Dice(4)
    assert isinstance(dice.alpha, torch.nn.Parameter)
    assert any(p is dice.alpha for p in dice.parameters())
    x = torch.randn(32, 4)
    dice(x).sum().backward()
    assert dice.alpha.grad is not None and dice.alpha.grad.abs().min() > 0


def test_dice_is_the_papers_formula_with_batch_statistics():
    torch.manual_seed(0)
    dice = Dice(3)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.1, -0.5, 2.0]))
    x = torch.randn(50, 3) * 3 + 1
    p = torch.sigmoid((x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-8))
    expected = p * x + (1 - p) * dice.alpha * x
    assert torch.allclose(dice(x), expected, atol=1e-5)


def test_dice_at_inference_uses_running_statistics_and_takes_one_row():
    torch.manual_seed(0)
    dice = Dice(3)
    for _ in range(50):  # running stats converge to mean 2, var 9
        dice(torch.randn(256, 3) * 3 + 2)
    dice.eval()
    one = torch.randn(1, 3)
    out = dice(one)  # a batch of one works
    mean, var = dice.bn.running_mean, dice.bn.running_var
    assert torch.allclose(mean, torch.full((3,), 2.0), atol=0.3)
    p = torch.sigmoid((one - mean) / torch.sqrt(var + 1e-8))
    assert torch.allclose(out, p * one + (1 - p) * dice.alpha * one, atol=1e-6)
    # a row's output does not depend on the rest of the batch in eval mode
    batch = torch.cat([one, torch.randn(7, 3) * 100])
    assert torch.allclose(dice(batch)[:1], out, atol=1e-6)


def test_dice_channels_last_on_3d_input():
    dice = Dice(5)
    x = torch.randn(4, 6, 5)
    assert torch.allclose(dice(x), dice(x.reshape(-1, 5)).reshape(4, 6, 5))


def test_activation_layer_choices_and_error():
    for name in ("dice", "prelu", "leakyrelu", "relu", "sigmoid", "none", "Dice"):
        assert activation_layer(name, 3)(torch.randn(2, 5, 3)).shape == (2, 5, 3)
    with pytest.raises(ConfigError, match="dice, prelu, leakyrelu, relu, sigmoid, none"):
        activation_layer("swish", 3)


def test_mlp_shapes():
    mlp = MLP(7, [5, 3], "prelu", dropout=0.1)
    assert mlp.out_dim == 3
    assert mlp(torch.randn(2, 4, 7)).shape == (2, 4, 3)
    assert MLP(7, []).out_dim == 7


def test_mlp_batch_norm_sits_between_each_linear_and_its_activation():
    torch.manual_seed(0)
    mlp = MLP(7, [5, 3], "relu", norm="batch")
    kinds = [type(m).__name__ for m in mlp.net]
    assert kinds == ["Linear", "RowBatchNorm", "ReLU", "Dropout"] * 2
    x = torch.randn(4, 6, 7)
    mlp.train()
    hidden = mlp.net[1](mlp.net[0](x))  # channels last: statistics over all 24 rows
    assert torch.allclose(hidden.reshape(-1, 5).mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(mlp(x), mlp(x.reshape(-1, 7)).reshape(4, 6, 3), atol=1e-6)
    mlp.eval()  # running statistics: a row's output does not depend on the other rows
    assert torch.allclose(mlp(x[:1, :1]).reshape(3), mlp(x)[0, 0], atol=1e-6)
    with pytest.raises(ConfigError, match="mlp_hidden_norm 'layer'.*none, batch"):
        MLP(7, [5], norm="layer")


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_target_attention_ignores_padded_positions(softmax, training):
    torch.manual_seed(0)
    att = TargetAttention(6, [8, 4], "dice", softmax=softmax)
    att.train(training)
    hist, target = torch.randn(5, 7, 6), torch.randn(5, 6)
    lengths = torch.tensor([7, 3, 1, 5, 2])
    mask = torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)
    noisy = torch.where(mask.unsqueeze(-1), hist, torch.randn_like(hist) * 10)
    pooled, weights = att(hist, target, mask)
    pooled2, weights2 = att(noisy, target, mask)
    assert torch.allclose(pooled, pooled2, atol=1e-6) and torch.allclose(weights, weights2, atol=1e-6)
    assert (weights[~mask] == 0).all()
    assert torch.allclose(pooled, (weights.unsqueeze(-1) * hist).sum(1), atol=1e-5)
    if softmax:
        assert torch.allclose(weights.sum(1), torch.ones(5), atol=1e-6)
    else:  # DIN: raw weights, they need not sum to one
        assert not torch.allclose(weights.sum(1), torch.ones(5), atol=1e-3)


def test_target_attention_reacts_to_the_target_and_all_padding_rows_are_zero():
    torch.manual_seed(0)
    att = TargetAttention(4, [8], "prelu").eval()
    hist = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    pooled, weights = att(hist, torch.randn(2, 4), mask)
    pooled2, _ = att(hist, torch.randn(2, 4), mask)
    assert not torch.allclose(pooled[0], pooled2[0])
    assert (pooled[1] == 0).all() and (weights[1] == 0).all()
    soft = TargetAttention(4, [8], "prelu", softmax=True).eval()
    p, w = soft(hist, torch.randn(2, 4), mask)
    assert torch.isfinite(p).all() and (w[1] == 0).all()


def test_time_bucket_boundaries_and_monotone():
    gap = torch.tensor([-5.0, 0.0, 0.5, 1.0, 1.9, 2.0, 3.9, 4.0, 1000.0])
    assert time_bucket(gap, 64).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 10]
    assert time_bucket(gap, 4).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3]  # clipped
    assert time_bucket(gap * 60, 64, unit=60.0).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 10]
    sweep = torch.sort(torch.rand(2000) * 1e6)[0]
    buckets = time_bucket(sweep, 16, unit=10.0)
    assert (buckets[1:] >= buckets[:-1]).all() and buckets.dtype == torch.long
    assert buckets.max() == 15


@pytest.fixture(scope="module")
def tiny_dataset():
    _, _, train_data, _, _ = build("SASRec", load_col=ITEM_COLS)
    return train_data._dataset


def test_item_feature_embedding_token_field(tiny_dataset):
    ds = tiny_dataset
    emb = ItemFeatureEmbedding(ds, 4, ["category"])
    assert emb.out_dim == 8
    ids = torch.tensor([[1, 2], [3, 0]])
    out = emb(ids)
    assert out.shape == (2, 2, 8)
    cat = ds.get_item_feature()["category"]
    assert torch.equal(out[..., :4], emb.id_embedding(ids))
    assert torch.equal(out[..., 4:], emb.embeddings["category"](cat[ids]))
    assert ItemFeatureEmbedding(ds, 4, None).fields == ["category"]  # None = every loaded feature


def test_item_feature_embedding_token_seq_is_the_mean_of_real_tokens():
    class Fake:
        iid_field, uid_field, dataset_name = "item_id", "user_id", "fake"
        from recbole.utils import FeatureSource as _S, FeatureType as _T

        field2source = {"item_id": _S.ITEM_ID, "genre": _S.ITEM, "year": _S.ITEM}
        field2type = {"item_id": _T.TOKEN, "genre": _T.TOKEN_SEQ, "year": _T.FLOAT}

        def num(self, field):
            return {"item_id": 4, "genre": 5}[field]

        def get_item_feature(self):
            return {
                "genre": torch.tensor([[0, 0], [1, 0], [2, 3], [4, 4]]),
                "year": torch.tensor([0.0, 0.1, 0.5, 1.0]),
            }

    emb = ItemFeatureEmbedding(Fake(), 3, ["genre", "year"])
    out = emb(torch.tensor([0, 1, 2, 3]))
    table = emb.embeddings["genre"].weight
    assert torch.allclose(out[0, 3:6], torch.zeros(3))
    assert torch.allclose(out[1, 3:6], table[1])
    assert torch.allclose(out[2, 3:6], (table[2] + table[3]) / 2)
    # fewer ids than table rows pools per id, more pools the table once: the same values
    assert torch.allclose(emb(torch.tensor([2, 1])), out[[2, 1]])
    ids = torch.tensor([[3, 2, 2], [1, 0, 3]])
    assert torch.allclose(emb(ids), out[ids])
    year = emb.embeddings["year"]
    assert torch.allclose(out[2, 6:], year(torch.tensor([[0.5]]))[0])


def test_missing_item_or_user_field_names_it_and_the_available_ones(tiny_dataset):
    with pytest.raises(ConfigError, match=r"'genre'.*category.*load_col"):
        ItemFeatureEmbedding(tiny_dataset, 4, ["genre"])
    with pytest.raises(ConfigError, match=r"'age'.*none"):
        UserFeatureEmbedding(tiny_dataset, 4, ["age"])


@pytest.mark.parametrize("softmax", [False, True])
def test_target_attention_equals_the_unit_on_the_concatenated_input(softmax):
    """forward's split first layer is DIN's unit MLP([e, v, e - v, e * v]), values and gradients."""
    torch.manual_seed(0)
    unit = TargetAttention(8, hidden=(6, 4), activation="sigmoid", softmax=softmax, scale=0.5)
    hist = torch.randn(5, 7, 8, requires_grad=True)
    target = torch.randn(5, 8, requires_grad=True)
    mask = torch.rand(5, 7) > 0.3
    mask[0] = False  # a row with no history

    def reference():
        t = target.unsqueeze(1).expand_as(hist)
        e, v = hist[mask], t[mask]
        real = unit.out(unit.mlp(torch.cat([e, v, e - v, e * v], -1))).squeeze(-1) * 0.5
        scores = hist.new_zeros(mask.shape).masked_scatter(mask, real)
        if softmax:
            scores = scores.masked_fill(~mask, float("-inf")).softmax(-1)
            scores = torch.where(mask, scores, torch.zeros_like(scores))
        return torch.einsum("bl,bld->bd", scores, hist), scores

    pooled, weights = unit(hist, target, mask)
    want_pooled, want_weights = reference()
    torch.testing.assert_close(pooled, want_pooled, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights, want_weights, atol=1e-6, rtol=1e-5)
    assert (weights[~mask] == 0).all()
    grads = torch.autograd.grad(pooled.square().sum(), [hist, target, *unit.parameters()])
    want = torch.autograd.grad(want_pooled.square().sum(), [hist, target, *unit.parameters()])
    for got, exp in zip(grads, want):
        torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-4)
