"""train_samples: window — BERT4Rec's sliding windows instead of RecBole's prefixes."""

from __future__ import annotations

import numpy as np
import pytest

from recbole_attn.config import ConfigError
from recbole_attn.data.windows import window_rows
from conftest import build


def bert4rec_window_ends(n: int, max_len: int, step: int) -> list[int]:
    """End index of each window of BERT4Rec's generator for a sequence of n items."""
    if n <= max_len:
        return [n - 1]
    begins = list(range(n - max_len, 0, -step)) + [0]
    return sorted(b + max_len - 1 for b in begins)


@pytest.mark.parametrize("max_len, step", [(5, 1), (5, 2), (10, 3), (4, 4)])
def test_window_rows_are_bert4rec_windows(max_len, step):
    lengths = [2, 3, 5, 6, 9, 17, 40]  # items per user's training sequence
    users = np.concatenate([np.full(n - 1, u) for u, n in enumerate(lengths)])  # n-1 prefix rows
    rows = window_rows(users, max_len, step)
    starts = np.r_[0, np.cumsum([n - 1 for n in lengths])]
    for u, n in enumerate(lengths):
        mine = rows[(rows >= starts[u]) & (rows < starts[u + 1])] - starts[u] + 1  # target index e
        assert mine.tolist() == bert4rec_window_ends(n, max_len, step)
        covered = set()  # every training item lies in some window
        for e in mine:
            covered.update(range(max(0, e - max_len + 1), e + 1))
        assert covered == set(range(n))


def test_window_rows_keep_users_interleaved_in_order():
    users = np.array([7, 3, 7, 3, 7, 3, 7])  # user 7: targets 1..4, user 3: targets 1..3
    rows = window_rows(users, max_len=2, step=2)
    # user 7 (m=4): e=4, e=2 (and e=1 = L-1); user 3 (m=3): e=3, e=1 (= L-1)
    assert rows.tolist() == [0, 1, 2, 5, 6]


def test_window_training_keeps_the_split_and_trains():
    _, _, prefix_train, prefix_valid, prefix_test = build("AttnBERT4Rec")
    config, net, train, valid, test = build(
        "AttnBERT4Rec", train_samples="window", sliding_window=0.5
    )
    full, kept = prefix_train._dataset.inter_feat, train._dataset.inter_feat
    users = full["user_id"].numpy()
    expected = window_rows(users, config["MAX_ITEM_LIST_LENGTH"], 5)
    assert 0 < len(kept) == len(expected) < len(full)
    assert (kept["item_id"] == full["item_id"][expected]).all()
    assert (kept["item_id_list"] == full["item_id_list"][expected]).all()
    for a, b in ((valid, prefix_valid), (test, prefix_test)):
        assert (a._dataset.inter_feat["item_id"] == b._dataset.inter_feat["item_id"]).all()
    batch = next(iter(train))
    loss = net.calculate_loss(batch)
    loss.backward()
    assert loss.item() > 0


@pytest.mark.parametrize(
    "model, overrides, message",
    [
        ("NOVABERT", {"train_samples": "all"}, "train_samples must be one of prefix, window, got 'all'"),
        ("SASRec", {"train_samples": "window"}, "train_samples: window is for the cloze models"),
        ("NOVABERT", {"train_samples": "window", "sliding_window": 0}, "sliding_window must be"),
    ],
)
def test_bad_train_samples_options_are_named(model, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(model, **overrides)
