"""AttnDIEN: invariants of the model, its GRU cells, its auxiliary negatives and its training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from recbole_attn.config import ConfigError
from recbole_attn.model.context_aware_recommender import dien as dien_module
from recbole_attn.model.context_aware_recommender.dien import AttnDIEN
from recbole_attn.model.interest_evolution import GRU_TYPES, AttentionalGRU
from conftest import build, scramble_padding

TINY = dict(
    load_col={"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "category"]},
    metrics=["AUC", "GAUC", "LogLoss"],
    valid_metric="AUC",
    embedding_size=8,
    aux_mlp=[16, 8],
    attention_mlp=[16, 8],
    mlp_hidden_size=[32, 16],
)


def make(**overrides):
    return build("AttnDIEN", **{**TINY, **overrides})


@pytest.fixture(scope="module")
def dien():
    config, model, train_data, valid_data, _ = make(full_sort_chunk=7)
    batch = next(iter(train_data))
    eval_batch = next(iter(valid_data))[0]
    return config, model, batch, eval_batch


@pytest.mark.parametrize("gru_type", GRU_TYPES)
def test_padded_history_positions_change_no_score(gru_type):
    _, model, train_data, _, _ = make(gru_type=gru_type)
    batch = next(iter(train_data))
    noisy = scramble_padding(batch, item_id_list=lambda n: torch.randint(1, model.n_items, (n,)))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.predict(batch), model.predict(noisy))
        assert torch.equal(model.attention_weights(batch), model.attention_weights(noisy))
    model.train()  # training loss too (Dice batch statistics, auxiliary negatives)
    torch.manual_seed(0)
    loss = model.calculate_loss(batch)
    torch.manual_seed(0)
    assert torch.equal(loss, model.calculate_loss(noisy))


def test_interest_states_equal_a_packed_gru_at_the_real_positions(dien):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    _, model, batch, _ = dien
    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    assert (length < seq.shape[1]).any()  # the batch has padding
    with torch.no_grad():
        emb, h, mask = model.interests(seq, length)
        packed = pack_padded_sequence(emb, length.cpu(), batch_first=True, enforce_sorted=False)
        ref, _ = pad_packed_sequence(model.extractor(packed)[0], batch_first=True, total_length=seq.shape[1])
    torch.testing.assert_close(h, ref * mask.unsqueeze(-1), rtol=1e-5, atol=1e-6)
    assert not h[~mask].any()


@pytest.mark.parametrize("kind", ["GRU", "AGRU", "AUGRU"])
def test_masked_steps_keep_the_state(kind):
    torch.manual_seed(0)
    cell = AttentionalGRU(5, 4, kind)
    x = torch.randn(3, 6, 5)
    att = torch.rand(3, 6)
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 1, 0]], dtype=torch.bool)
    states, final = cell(x, mask, att)
    for t in range(6):
        prev = states[:, t - 1] if t else torch.zeros(3, 4)
        keep = ~mask[:, t]
        assert torch.equal(states[keep, t], prev[keep])
        assert not torch.allclose(states[~keep, t], prev[~keep])
    assert torch.equal(final, states[:, -1])
    x2, att2 = x.clone(), att.clone()
    x2[~mask] = torch.randn(int((~mask).sum()), 5)
    att2[~mask] = torch.rand(int((~mask).sum()))
    assert torch.equal(cell(x2, mask, att2)[0], states)


def test_agru_update_gate_is_the_attention_score():
    torch.manual_seed(0)
    cell = AttentionalGRU(5, 4, "AGRU")
    x, mask = torch.randn(2, 3, 5), torch.ones(2, 3, dtype=torch.bool)
    states, _ = cell(x, mask, torch.zeros(2, 3))
    assert torch.equal(states, torch.zeros(2, 3, 4))  # a = 0: nothing enters the state
    augru = AttentionalGRU(5, 4, "AUGRU")
    assert torch.equal(augru(x, mask, torch.zeros(2, 3))[0], torch.zeros(2, 3, 4))
    gru = AttentionalGRU(5, 4, "GRU")
    assert gru(x, mask)[0].abs().sum() > 0


def test_aux_negatives_are_fresh_and_never_clicked(dien):
    _, model, batch, _ = dien
    seq, length, user = batch["item_id_list"], batch["item_length"], batch["user_id"]
    mask = torch.arange(seq.shape[1]).unsqueeze(0) < length.unsqueeze(1)
    neg1, valid1 = model.sample_aux_negatives(batch)
    neg2, valid2 = model.sample_aux_negatives(batch)
    assert not torch.equal(neg1, neg2)  # redrawn at every call
    for neg, valid in ((neg1, valid1), (neg2, valid2)):
        has_next = torch.zeros_like(mask)
        has_next[:, :-1] = mask[:, 1:]
        assert not (valid & ~has_next).any()  # only positions with a next item
        assert valid.float().mean() > 0.9 * has_next.float().mean()
        positive = torch.roll(seq, -1, dims=1)
        assert not (valid & (neg == positive)).any()
        assert (neg >= 1).all()
        clicked = {}
        for u, row, m in zip(user.tolist(), seq.tolist(), mask.tolist()):
            clicked.setdefault(u, set()).update(i for i, real in zip(row, m) if real)
        for u, item, label in zip(user.tolist(), batch["item_id"].tolist(), batch["label"].tolist()):
            if label > 0.5:
                clicked[u].add(item)
        for b, u in enumerate(user.tolist()):
            drawn = neg[b][valid[b]].tolist()
            assert not clicked[u].intersection(drawn)


def test_exhausted_draws_are_left_out():
    _, model, train_data, _, _ = make(aux_neg_max_tries=1)
    batch = next(iter(train_data))
    model.n_items = 4  # three real items: most draws hit a clicked one
    neg, valid = model.sample_aux_negatives(batch)
    seq = batch["item_id_list"]
    hit = (neg.unsqueeze(-1) == seq.unsqueeze(1)).any(-1)
    assert not (valid & hit).any()


def test_each_gru_type_runs_and_gives_different_scores():
    scores = {}
    for gru_type in GRU_TYPES:
        _, model, train_data, _, _ = make(gru_type=gru_type)
        batch = next(iter(train_data))
        loss = model.calculate_loss(batch)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None for n, p in model.evolver.named_parameters())
        model.eval()
        with torch.no_grad():
            scores[gru_type] = model.predict(batch)
    for a in GRU_TYPES:
        for b in GRU_TYPES:
            if a < b:
                assert not torch.allclose(scores[a], scores[b]), (a, b)


def test_attention_weights_are_a_softmax_over_the_history(dien):
    _, model, batch, _ = dien
    model.eval()
    with torch.no_grad():
        weights = model.attention_weights(batch)
    mask = torch.arange(weights.shape[1]).unsqueeze(0) < batch["item_length"].unsqueeze(1)
    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))
    assert torch.allclose(weights.sum(1), torch.ones(len(weights)), atol=1e-6)


def test_full_sort_predict_equals_predict_item_by_item(dien):
    _, model, _, eval_batch = dien
    model.eval()
    users = eval_batch["user_id"]
    first = torch.tensor([int((users == u).nonzero()[0]) for u in users.unique()[:5]])
    rows = eval_batch[first]  # five users, five different histories
    assert len(rows["item_length"].unique()) > 1
    with torch.no_grad():
        full = model.full_sort_predict(rows)  # [B, N], chunks of 7 items
        b, n = full.shape
        expanded = rows.repeat_interleave(n)
        expanded.update(type(rows)({"item_id": torch.arange(n).repeat(b)}))
        single = model.predict(expanded).view(b, n)
    assert n == model.n_items
    assert torch.allclose(full, single, atol=1e-6)


def test_save_and_load_give_the_same_scores(dien, tmp_path):
    config, model, _, eval_batch = dien
    model.train()
    model.calculate_loss(eval_batch).backward()  # moves the running statistics off their init
    model.eval()
    path = tmp_path / "dien.pth"
    torch.save(model.state_dict(), path)
    _, fresh, _, _, _ = make(full_sort_chunk=7, seed=7)
    fresh.load_state_dict(torch.load(path))
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model.predict(eval_batch), fresh.predict(eval_batch))


def test_same_seed_same_numbers():
    out = []
    for _ in range(2):
        _, model, train_data, _, _ = make()
        batch = next(iter(train_data))
        torch.manual_seed(1)
        out.append(model.calculate_loss(batch).detach())
    assert torch.equal(out[0], out[1])


def test_aux_loss_is_weighted_by_alpha(dien):
    _, model, batch, _ = dien
    model.train()
    alpha = model.alpha
    try:
        model.alpha = 0.0
        torch.manual_seed(3)
        base = model.calculate_loss(batch)
        model.alpha = 2.0
        torch.manual_seed(3)
        weighted = model.calculate_loss(batch)
        distinct = model._history(batch)[2]
        torch.manual_seed(3)
        aux = model.auxiliary_loss(distinct, batch)
    finally:
        model.alpha = alpha
    assert aux > 0
    assert torch.allclose(weighted, base + 2.0 * aux, atol=1e-5)


def test_loss_falls_on_the_tiny_fixture(tmp_path):
    from recbole_attn.trainer import get_trainer

    config, model, train_data, valid_data, _ = make(epochs=6, learning_rate=0.01, checkpoint_dir=str(tmp_path))
    trainer = get_trainer(config["MODEL_TYPE"], "AttnDIEN", AttnDIEN)(config, model)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    losses = trainer.train_loss_dict
    assert losses[max(losses)] < 0.9 * losses[0], losses


def test_unknown_gru_type_lists_the_choices():
    with pytest.raises(ConfigError, match="gru_type.*GRU, AIGRU, AGRU, AUGRU"):
        make(gru_type="LSTM")


def test_missing_item_feature_is_named():
    with pytest.raises(ConfigError, match="genre"):
        make(item_fields=["genre"])


def test_every_key_the_model_reads_is_in_its_yaml():
    source = Path(dien_module.__file__).read_text()
    keys = set(re.findall(r'config\["([^"]+)"\]', source)) - {"LABEL_FIELD"}
    defaults = yaml.safe_load(
        (Path(dien_module.__file__).parents[2] / "properties" / "model" / "AttnDIEN.yaml").read_text()
    )
    assert keys and keys <= set(defaults), keys - set(defaults)
    assert defaults["metrics"] == ["AUC", "GAUC", "LogLoss"]


def test_distinct_rows_cover_every_row_once(dien):
    _, model, batch, _ = dien
    seq, user = batch["item_id_list"], batch["user_id"]
    mask = model.history_mask(seq, batch["item_length"])
    rows, inverse = model.distinct_rows(user, seq, mask)
    assert len(rows) < len(seq)  # sampled negatives repeat their positive's history
    assert torch.equal(user[rows][inverse], user)
    assert torch.equal((seq * mask)[rows][inverse], seq * mask)
    assert len(set(zip(user[rows].tolist(), map(tuple, (seq * mask)[rows].tolist())))) == len(rows)


def test_full_ranking_evaluation_runs(tmp_path):
    from recbole_attn.trainer import get_trainer

    config, model, _, valid_data, _ = make(
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        metrics=["Recall", "NDCG"],
        valid_metric="NDCG@5",
        checkpoint_dir=str(tmp_path),
    )
    trainer = get_trainer(config["MODEL_TYPE"], "AttnDIEN", AttnDIEN)(config, model)
    result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    assert 0.0 <= result["ndcg@5"] <= 1.0 and 0.0 <= result["recall@5"] <= 1.0


def _trained(**overrides):
    """A model after one epoch of Adam steps (running statistics off their init) and a batch."""
    _, model, train_data, _, _ = make(**overrides)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for batch in train_data:
        opt.zero_grad()
        model.calculate_loss(batch).backward()
        opt.step()
    return model.eval(), batch


def test_final_mlp_input_is_batchnormed_with_running_statistics_in_eval():
    model, batch = _trained()
    norm = model.mlp_norm
    d, u = model.hidden_size, model.user_embedding.out_dim
    assert isinstance(norm, torch.nn.BatchNorm1d) and norm.num_features == u + 4 * d  # build_fcn_net's bn1
    assert not torch.allclose(norm.running_mean, torch.zeros_like(norm.running_mean))
    seen = []
    handle = norm.register_forward_hook(lambda mod, inp, out: seen.append((inp[0], out)))
    with torch.no_grad():
        probs = model.predict(batch)
    handle.remove()
    x, out = seen[0]
    expected = (x - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias
    assert torch.allclose(out, expected, atol=1e-5)
    with torch.no_grad():  # a row's score does not depend on the other rows of its batch
        alone = torch.cat([model.predict(batch[i : i + 1]) for i in range(5)])
    assert torch.allclose(alone, probs[:5], atol=1e-6)


def test_mlp_input_norm_choices():
    from recbole_attn.layers import ChannelAffine

    _, model, _, _, _ = make(mlp_input_norm="affine")
    assert isinstance(model.mlp_norm, ChannelAffine)
    _, model, _, _, _ = make(mlp_input_norm="none")
    assert isinstance(model.mlp_norm, torch.nn.Identity)
    with pytest.raises(ConfigError, match="batch, affine, none"):
        make(mlp_input_norm="layer")


def test_attention_query_is_the_prelu_projection_of_the_target(dien):
    _, model, batch, _ = dien
    model.eval()
    seen = []
    handle = model.attention.register_forward_hook(lambda mod, inp, out: seen.append(inp[1]))
    with torch.no_grad():
        model.predict(batch)
        target = model.item_embedding(batch["item_id"])
    handle.remove()
    linear, prelu = model.query
    assert torch.allclose(prelu.weight, torch.full_like(prelu.weight, 0.1))  # the code's prelu init
    z = linear(target)
    assert torch.allclose(seen[0], torch.where(z >= 0, z, 0.1 * z), atol=1e-6)
    assert not torch.allclose(seen[0], target)
    _, paper, _, _, _ = make(attention_query_proj=False)
    assert isinstance(paper.query, torch.nn.Identity)
