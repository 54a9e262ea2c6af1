"""The lean sequential dataset gives RecBole's SequentialDataset's batches, losses and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recbole.data.dataset import SequentialDataset
from recbole.utils import init_seed

from recbole_attn.config import Config, ConfigError
from recbole_attn.data.lean import LeanSequentialDataset, SampleInteraction, reads_item_ids_only, sample_positions
from recbole_attn.data.windows import LeanWindowSequentialDataset, WindowSequentialDataset
from recbole_attn.quick_start import prepare
from conftest import tiny_config

LOAD_COL = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "category"]}


def built(model: str, kind: str, dataset: str = "tiny", **overrides):
    """(config, dataset, train, valid, test, net, trainer) for ``sequential_dataset: kind``."""
    cfg = tiny_config(sequential_dataset=kind, **overrides)
    if dataset != "tiny":
        cfg.pop("data_path")
    config = Config(model=model, dataset=dataset, config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    return (config, *prepare(config, log=False))


def batches(loader, seed: int) -> list:
    """Every batch of one pass over ``loader``, seeded as an epoch of the trainer."""
    init_seed(seed, True)
    loader.generator.manual_seed(seed)
    return [b if not isinstance(b, tuple) else b for b in loader]


def lean_fields(fields: list[str], dataset) -> list[str]:
    """The fields of a RecBole batch (``fields``) that the lean dataset's batch holds: every
    one, or for a model that reads item ids only, all but the other ``_list`` fields and the
    joined item and user features (of the positive and the negative items)."""
    if dataset is None or not reads_item_ids_only(dataset.config):
        return list(fields)
    suffix, ids = dataset.config["LIST_SUFFIX"], {dataset.uid_field, dataset.iid_field}
    joined = {f for feat in (dataset.item_feat, dataset.user_feat) if feat is not None for f in feat.columns} - ids
    joined |= {dataset.config["NEG_PREFIX"] + f for f in joined}
    return [f for f in fields if f not in joined and (not f.endswith(suffix) or f == dataset.iid_field + suffix)]


def assert_same(a, b, where: str, dataset=None) -> None:
    """``a`` (lean) equals ``b`` (RecBole) in every field ``lean_fields`` keeps."""
    if isinstance(a, tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]", dataset)
    elif a is None or isinstance(a, torch.Tensor):
        assert (a is None and b is None) or (a.dtype == b.dtype and torch.equal(a, b)), where
    else:
        assert list(a.interaction) == lean_fields(list(b.interaction), dataset), f"{where}: fields differ"
        for field in a.interaction:
            x, y = a[field], b[field]
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), f"{where}: field {field}"


def assert_same_loaders(ours, theirs, seed: int) -> int:
    """Every field of every batch of each split equal (those the lean batch keeps, see
    ``lean_fields``); returns the number of batches compared."""
    count = 0
    for name, a_loader, b_loader in zip(("train", "valid", "test"), ours, theirs):
        a_batches, b_batches = batches(a_loader, seed), batches(b_loader, seed)
        assert len(a_batches) == len(b_batches) > 0, name
        for i, (a, b) in enumerate(zip(a_batches, b_batches)):
            assert_same(a, b, f"{name} batch {i}", a_loader._dataset)
        count += len(a_batches)
    return count


MODELS = {
    "SASRec": {},
    "NOVABERT": {"load_col": LOAD_COL},
    "AttnDIN": {"load_col": LOAD_COL},
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_tiny_batches_loss_and_metrics_equal_recbole(model):
    lean = built(model, "lean", **MODELS[model])
    base = built(model, "recbole", **MODELS[model])
    assert type(lean[1]) is LeanSequentialDataset and type(base[1]) is SequentialDataset
    assert isinstance(lean[2]._dataset.inter_feat, SampleInteraction)
    assert assert_same_loaders(lean[2:5], base[2:5], lean[0]["seed"]) > 3
    results = []
    for config, _, train, valid, _, _, trainer in (lean, base):
        init_seed(config["seed"], True)
        loss = trainer._train_epoch(train, 0, show_progress=False)
        results.append((loss, trainer._valid_epoch(valid, show_progress=False)))
    (loss_a, valid_a), (loss_b, valid_b) = results
    assert loss_a == loss_b and valid_a == valid_b


def test_window_samples_are_lean_and_equal():
    lean = built("NOVABERT", "lean", train_samples="window", load_col=LOAD_COL, MAX_ITEM_LIST_LENGTH=3)
    base = built("NOVABERT", "recbole", train_samples="window", load_col=LOAD_COL, MAX_ITEM_LIST_LENGTH=3)
    assert type(lean[1]) is LeanWindowSequentialDataset and type(base[1]) is WindowSequentialDataset
    assert assert_same_loaders(lean[2:5], base[2:5], lean[0]["seed"]) > 3


def test_prm_ranker_lists_equal_recbole(tmp_path):
    from recbole_attn.quick_start import run

    run("SASRec", "tiny", config_dict=tiny_config(checkpoint_dir=str(tmp_path), epochs=1, load_col=LOAD_COL,
                                                  sequential_dataset="recbole"))
    (path,) = tmp_path.glob("SASRec-*.pth")
    prm = dict(load_col=LOAD_COL, checkpoint_dir=str(tmp_path), ranker_checkpoint=str(path), list_length=10)
    lean, base = built("PRM", "lean", **prm), built("PRM", "recbole", **prm)
    assert type(lean[1]) is LeanSequentialDataset
    assert assert_same_loaders(lean[2:5], base[2:5], lean[0]["seed"]) > 2
    for split in (3, 4):  # the ranker's lists at the validation and test points
        for a, b in zip(batches(lean[split], 0), batches(base[split], 0)):
            lists_a, lists_b = lean[5].ranker_lists(a[0]), base[5].ranker_lists(b[0])
            assert_same(tuple(lists_a), tuple(lists_b), f"split {split} ranker lists")
    results = []
    for config, _, train, valid, _, _, trainer in (lean, base):
        init_seed(config["seed"], True)
        results.append(trainer.fit(train, valid, saved=False))
    assert results[0] == results[1]


ML100K_INTER = ["user_id", "item_id", "rating", "timestamp"]


@pytest.mark.parametrize("model, load_col", [
    ("SASRec", {"inter": ML100K_INTER}),
    ("NOVABERT", {"inter": ML100K_INTER, "item": ["item_id", "release_year", "class"]}),  # side information
    ("AttnDIN", {"inter": ML100K_INTER, "item": ["item_id", "class"]}),  # labelled protocol, 100 negatives
])
def test_ml100k_batches_equal_recbole(model, load_col):
    overrides = dict(train_batch_size=2048, eval_batch_size=4096, MAX_ITEM_LIST_LENGTH=50, load_col=load_col)
    lean, base = built(model, "lean", "ml-100k", **overrides), built(model, "recbole", "ml-100k", **overrides)
    assert type(lean[1]) is LeanSequentialDataset and type(base[1]) is SequentialDataset
    assert assert_same_loaders(lean[2:5], base[2:5], lean[0]["seed"]) > 40


def test_sample_positions_match_recbole_loop():
    rng = np.random.default_rng(0)
    users = np.sort(rng.integers(0, 30, 400))
    for max_len in (1, 3, 50):
        target, length = sample_positions(users, max_len)
        expected_t, expected_l, start, last = [], [], 0, None
        for i, uid in enumerate(users):  # RecBole's data_augmentation loop
            if last != uid:
                last, start = uid, i
            else:
                if i - start > max_len:
                    start += 1
                expected_t.append(i)
                expected_l.append(i - start)
        assert target.tolist() == expected_t and length.tolist() == expected_l


def test_whole_list_column_and_subsets_are_recbole_s():
    lean, base = built("SASRec", "lean"), built("SASRec", "recbole")
    a, b = lean[1].inter_feat, base[1].inter_feat
    assert set(a) == set(b.interaction) and "item_id_list" in a
    for field in b.interaction:
        assert torch.equal(a[field], b[field]), field
    index = torch.tensor([5, 0, 3])
    assert torch.equal(a[index]["item_id_list"], b[index]["item_id_list"])
    assert (lean[1].inter_matrix() != base[1].inter_matrix()).nnz == 0


def test_unknown_sequential_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="sequential_dataset"):
        built("SASRec", "compact")


@pytest.mark.parametrize("dataset", ["tiny", "ml-100k"])
def test_c_engine_reads_recbole_s_frames(dataset):
    lean, base = built("SASRec", "lean", dataset), built("SASRec", "recbole", dataset)
    for feat in ("inter_feat", "item_feat", "user_feat"):  # after build: Interactions
        a, b = getattr(lean[1], feat), getattr(base[1], feat)
        assert (a is None) == (b is None), feat
        if b is not None:
            assert set(a) == set(b.interaction), feat
            for field in b.interaction:
                assert a[field].dtype == b[field].dtype and torch.equal(a[field], b[field]), f"{feat}.{field}"
    assert lean[1].field2id_token.keys() == base[1].field2id_token.keys()
    for field, tokens in base[1].field2id_token.items():
        assert list(lean[1].field2id_token[field]) == list(tokens), field
    assert lean[1].field2seqlen == base[1].field2seqlen


def test_c_engine_only_for_one_character_separators(tmp_path):
    import pandas as pd

    from recbole_attn.data.lean import c_engine_csv

    path = tmp_path / "x.inter"
    path.write_text("a:token::b:float\n1::2.5\n")
    with c_engine_csv():  # a two-character separator is a regex: the C engine cannot read it
        df = pd.read_csv(path, delimiter="::", engine="python", dtype=str)
    assert df.values.tolist() == [["1", "2.5"]]
    path.write_text('a\tb\n"x\ty"\t2\n')
    with c_engine_csv():  # a tab: the C engine, same frame as the Python engine's (quoted tab included)
        inside = pd.read_csv(path, delimiter="\t", engine="python")
    assert inside.equals(pd.read_csv(path, delimiter="\t", engine="python")) and inside.shape == (1, 2)


def test_leave_one_out_index_is_recbole_s():
    from recbole.data.dataset import Dataset

    from recbole_attn.data.lean import leave_one_out_index

    rng = np.random.default_rng(1)
    keys = np.r_[rng.integers(0, 40, 500), 99, 7, 98, 98]  # groups of 1, 2, ..., ~25 rows, unsorted
    for num in (1, 2):
        grouped = Dataset._grouped_index(None, keys)
        expected = Dataset._split_index_by_leave_one_out(None, grouped, num)
        assert [p.tolist() for p in leave_one_out_index(keys, num)] == expected


def test_ml100k_prm_ranker_lists_equal_recbole(tmp_path):
    from recbole_attn.quick_start import run

    size = dict(train_batch_size=2048, eval_batch_size=4096, MAX_ITEM_LIST_LENGTH=50, load_col={"inter": ML100K_INTER})
    ranker = tiny_config(checkpoint_dir=str(tmp_path), epochs=1, sequential_dataset="recbole", **size)
    ranker.pop("data_path")
    run("SASRec", "ml-100k", config_dict=ranker)
    (path,) = tmp_path.glob("SASRec-*.pth")
    prm = dict(checkpoint_dir=str(tmp_path), ranker_checkpoint=str(path), list_length=10, **size)
    lean, base = built("PRM", "lean", "ml-100k", **prm), built("PRM", "recbole", "ml-100k", **prm)
    assert type(lean[1]) is LeanSequentialDataset and type(base[1]) is SequentialDataset
    assert assert_same_loaders(lean[2:5], base[2:5], lean[0]["seed"]) > 2
    for split in (3, 4):  # the ranker's lists at the validation and test points
        for a, b in zip(batches(lean[split], 0), batches(base[split], 0)):
            assert_same(tuple(lean[5].ranker_lists(a[0])), tuple(base[5].ranker_lists(b[0])), f"split {split}")
