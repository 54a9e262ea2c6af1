"""Scoring that shares work across candidates equals scoring pair by pair.

For every target-item model (AttnDIN, AttnDIEN, BST, ATRank) on the tiny fixture, after a
few training steps (so BatchNorm and Dice running statistics are not at their init), in
eval mode: ``full_sort_predict`` of rows of distinct users with padded histories of
different lengths equals ``predict`` on the explicitly expanded (row, item) pairs; and
``predict`` on a labelled evaluation batch (each history with its positive and sampled
negatives, the history side computed once per distinct history) equals ``predict`` row by row.
"""

from __future__ import annotations

import pytest
import torch

from test_atrank import PAPER, atrank
from test_bst import bst
from test_dien import make as dien
from test_din import din

CASES = {
    "AttnDIN": lambda: din(full_sort_chunk=7),
    "AttnDIN-paper": lambda: din(
        full_sort_chunk=7, attention_softmax=False, attention_scale=False, attention_activation="dice",
        pooled_projection=False, mlp_product=False, item_bias=False,
    ),
    "AttnDIN-no-attention-mlp": lambda: din(full_sort_chunk=7, attention_mlp=[]),
    "AttnDIEN-AUGRU": lambda: dien(full_sort_chunk=7, gru_type="AUGRU"),
    "AttnDIEN-AGRU": lambda: dien(full_sort_chunk=7, gru_type="AGRU"),
    "AttnDIEN-AIGRU": lambda: dien(full_sort_chunk=7, gru_type="AIGRU"),
    "AttnDIEN-GRU": lambda: dien(full_sort_chunk=7, gru_type="GRU"),
    "BST": lambda: bst(full_sort_chunk=7),
    "ATRank": lambda: atrank(full_sort_chunk=7),
    "ATRank-paper": lambda: atrank(full_sort_chunk=7, **PAPER),
}


def distinct_user_rows(batch, k: int = 6):
    """The first row of ``k`` users of ``batch`` (different histories)."""
    users = batch["user_id"]
    first = torch.tensor([int((users == u).nonzero()[0]) for u in users.unique()[:k]])
    return batch[first]


def trained(case: str):
    """(model, train data, valid data) after three training steps."""
    _, model, train_data, valid_data, _ = CASES[case]()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step, batch in enumerate(train_data):
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
        if step == 2:
            break
    return model, train_data, valid_data


@pytest.mark.parametrize("case", list(CASES))
def test_labelled_batch_equals_row_by_row_predict(case):
    model, _, valid_data = trained(case)
    batch = next(iter(valid_data))
    batch = batch[0] if isinstance(batch, tuple) else batch
    histories = torch.cat([batch["user_id"].unsqueeze(1), batch["item_id_list"]], 1)
    assert len(histories.unique(dim=0)) < len(batch) / 2  # rows share histories: grouping is exercised
    model.eval()
    with torch.no_grad():
        grouped = model.predict(batch)
        single = torch.cat([model.predict(batch[i : i + 1]) for i in range(len(batch))])
    assert (grouped - single).abs().max() <= 1e-5
    assert grouped.std() > 1e-4


@pytest.mark.parametrize("case", list(CASES))
def test_shared_full_sort_equals_per_pair_predict(case):
    model, train_data, _ = trained(case)
    rows = distinct_user_rows(next(iter(train_data)))
    length, width = rows["item_length"], rows["item_id_list"].shape[1]
    assert (length < width).any() and len(length.unique()) > 1  # padding, different lengths
    model.eval()
    with torch.no_grad():
        full = model.full_sort_predict(rows)  # [B, N], chunks of 7 items
        b, n = full.shape
        pairs = rows.repeat_interleave(n)
        pairs.update(type(rows)({"item_id": torch.arange(n).repeat(b)}))
        single = model.predict(pairs).view(b, n)
    assert n == model.n_items
    assert (full - single).abs().max() <= 1e-5
    assert full[:, 1:].std() > 1e-4  # the scores differ across items: the check has teeth


@pytest.mark.parametrize("hidden", [[8, 4], []])
def test_split_first_layer_equals_the_unit_on_the_concatenated_input(hidden):
    """``TargetAttention.shared`` (first layer split into history, candidate and product
    terms) against ``forward`` on [e, v, e - v, e * v], one candidate at a time."""
    from recbole_attn.layers import TargetAttention

    torch.manual_seed(0)
    unit = TargetAttention(6, hidden, "prelu", softmax=True, scale=0.4)
    for p in unit.parameters():
        torch.nn.init.normal_(p)
    unit.eval()
    hist, targets = torch.randn(3, 5, 6), torch.randn(4, 6)
    mask = torch.arange(5)[None] < torch.tensor([5, 2, 1])[:, None]
    all_pooled, all_weights = unit.shared(hist, targets, mask)  # [3, 4, 6], [3, 4, 5]
    for c in range(4):
        pooled, weights = unit(hist, targets[c].expand(3, 6), mask)
        assert torch.allclose(all_weights[:, c], weights, atol=1e-5)
        assert torch.allclose(all_pooled[:, c], pooled, atol=1e-5)
    assert not torch.allclose(all_weights[:, 0], all_weights[:, 1], atol=1e-3)  # candidates differ


@pytest.mark.parametrize("case", ["ATRank", "ATRank-paper"])
def test_atrank_training_shares_the_history_encoding_with_the_same_loss_and_gradients(case):
    """Without dropout, a training batch's sampled negatives repeat their positive's history and
    ATRank encodes it once: the loss and every gradient equal encoding row by row."""
    model, train_data, _ = trained(case)
    batch = next(iter(train_data))
    histories = torch.cat([batch["item_id_list"], batch["timestamp"].unsqueeze(1)], 1)
    assert len(histories.unique(dim=0)) < len(batch)  # rows share histories: sharing is exercised
    model.train()
    calls = []
    encode = model._encode
    model._encode = lambda items, *rest: calls.append(len(items)) or encode(items, *rest)

    def loss_and_grads():
        model.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    shared, shared_grads = loss_and_grads()
    assert calls[-1] < len(batch)  # encoded once per distinct history
    model.dropout_prob = 0.5  # the rule alone (the modules' p stays 0): rows get their own masks
    single, single_grads = loss_and_grads()
    assert calls[-1] == len(batch)
    assert (shared - single).abs() <= 1e-6 and shared_grads.keys() == single_grads.keys()
    for name, grad in single_grads.items():
        assert (shared_grads[name] - grad).abs().max() <= 1e-6 * max(1.0, grad.abs().max().item()), name
