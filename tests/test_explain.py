"""Attention explanations (recbole_attn.explain): scores, weights, files and the command line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import recbole_attn
from recbole.data.interaction import Interaction

from recbole_attn import cli
from recbole_attn.explain import capture
from recbole_attn.explain.api import item_names, user_row
from recbole_attn.explain.extract import EXTRACTORS, explain_batch
from conftest import build, train_tiny

LOAD_COL = {"inter": ["user_id", "item_id", "rating", "timestamp", "behavior_type"], "item": ["item_id", "category"]}
CTR = dict(
    metrics=["AUC", "GAUC", "LogLoss"],
    valid_metric="AUC",
    eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni100"},
    train_neg_sample_args={"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False, "candidate_num": 0},
)
SETTINGS = {
    "AttnDIN": dict(CTR, embedding_size=8, attention_mlp=[8], mlp_hidden_size=[16, 8]),
    "AttnDIEN": dict(CTR, embedding_size=8, attention_mlp=[8], mlp_hidden_size=[16, 8]),
    "BST": dict(CTR, embedding_size=8, n_heads=2, n_layers=2, mlp_hidden_size=[16]),
    "ATRank": dict(CTR, hidden_size=16, n_spaces=2, inner_size=16, group_embedding_size={"browse": 8, "engage": 8}),
    "NOVABERT": dict(n_heads=2),
    "AttnBERT4Rec": dict(n_heads=2),
    "AttRec": {},
    "PRM": dict(list_length=5, n_heads=2),
}
MODELS = list(SETTINGS)


@pytest.fixture(scope="module")
def ranker(tmp_path_factory):
    """A tiny AttRec checkpoint (one epoch): PRM's ranker and the command line's checkpoint."""
    folder = tmp_path_factory.mktemp("ranker")
    _, path = train_tiny(folder, "AttRec", epochs=1, load_col=LOAD_COL)
    return folder, path


@pytest.fixture(scope="module")
def models(ranker):
    """Model name -> (model, train_data, test_data), untrained (the weights need not be meaningful)."""
    cache = {}

    def get(name):
        if name not in cache:
            extra = dict(SETTINGS[name])
            if name == "PRM":
                extra.update(checkpoint_dir=str(ranker[0]), ranker_checkpoint=str(ranker[1]))
            _, model, train, _, test = build(name, load_col=LOAD_COL, **extra)
            cache[name] = (model.eval(), train, test)
        return cache[name]

    return get


def padded_batch(model, train):
    """Training rows whose histories are shorter than MAX_ITEM_LIST_LENGTH (padding present)."""
    feat = train._dataset.inter_feat
    rows = feat[(feat[model.ITEM_SEQ_LEN] < feat[model.ITEM_SEQ].shape[1]).nonzero().flatten()[:24]]
    assert (rows[model.ITEM_SEQ_LEN] < rows[model.ITEM_SEQ].shape[1]).all()
    return rows


def test_every_model_has_an_explanation():
    assert set(MODELS) == set(recbole_attn.MODELS) and set(EXTRACTORS) | {"AttnBERT4Rec"} == set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_reported_scores_are_predicts_and_every_png_is_written(models, name, tmp_path):
    model, _, test = models(name)
    result = recbole_attn.explain(model, "3", items=["2", "5"], k=4, data=test, out_dir=tmp_path)
    assert [e["rank"] for e in result["items"][:4]] == [1, 2, 3, 4] and {"2", "5"} <= {e["token"] for e in result["items"]}
    row = user_row(test, "3")
    assert [h["id"] for h in result["history"]] == row[model.ITEM_SEQ][0, : int(row[model.ITEM_SEQ_LEN][0])].tolist()
    for entry in result["items"]:
        pair = row.repeat(1)
        pair.update(Interaction({"item_id": torch.tensor([entry["id"]])}))
        with torch.no_grad():
            assert entry["score"] == pytest.approx(float(model.predict(pair)[0]), abs=1e-5)
    pngs = [Path(f) for f in result["files"] if f.endswith(".png")]
    assert len(pngs) == len(result["attention"]) >= 1
    assert all(p.is_file() and p.stat().st_size > 1000 for p in pngs)
    saved = json.loads((tmp_path / f"{name}-user3.json").read_text())
    assert saved["items"] == result["items"] and saved["attention"][0]["weights"]


@pytest.mark.parametrize("name", MODELS)
def test_weights_are_zero_at_padding_and_normalised_ones_sum_to_one(models, name):
    model, train, _ = models(name)
    batch = padded_batch(model, train)
    _, maps = explain_batch(model, batch)
    for amap in maps:
        keys = amap.key_mask[:, None, None, :].expand_as(amap.values)
        if name == "PRM":  # a list has no padding
            assert amap.key_mask.all()
        else:
            assert not amap.key_mask.all()
        assert torch.equal(amap.values[~keys], torch.zeros_like(amap.values[~keys])), amap.name
        if amap.normalised:
            sums = amap.values.sum(-1)  # [B, P, Q]
            if amap.layout == "keys":  # only the real queries' rows
                sums = sums.permute(0, 2, 1)[amap.key_mask]
            assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5), amap.name
            assert (amap.values >= 0).all()


def test_normalised_is_claimed_only_where_the_model_normalises(models):
    model, train, _ = models("AttnDIN")
    batch = padded_batch(model, train)
    model.attention.softmax = False
    try:
        (amap,) = explain_batch(model, batch)[1]
        assert not amap.normalised
    finally:
        model.attention.softmax = True


def test_recording_leaves_scores_and_returned_weights_unchanged(models):
    for name in ("BST", "NOVABERT", "ATRank"):
        model, train, _ = models(name)
        batch = padded_batch(model, train)
        with torch.no_grad():
            plain = model.predict(batch)
            with capture.recording(model):
                recorded = model.predict(batch)
        assert torch.allclose(plain, recorded, atol=1e-5), name
    model, train, _ = models("BST")
    batch = padded_batch(model, train)
    with torch.no_grad():
        plain = model.attention_weights(batch)
        with capture.recording(model) as rec:
            inside = model.attention_weights(batch)
        assert torch.allclose(plain, inside, atol=1e-6)
        assert rec.last(model.blocks[-1].attn).shape[1] == model.n_heads  # per head recorded
    assert not capture.active()


def test_novabert_side_ablation_changes_its_attention(models):
    model, train, _ = models("NOVABERT")
    assert model.side.n_sides
    _, (full, ablated) = explain_batch(model, padded_batch(model, train))
    assert "ablated" in ablated.name and not torch.allclose(full.values, ablated.values)
    assert "forward" not in vars(model.side)  # the ablation is undone


def test_din_largest_weight_matters_more_than_smallest():
    """Trained AttnDIN: dropping the history item with the largest weight moves the score more,
    on average over the test users, than dropping the one with the smallest."""
    _, model, train, _, test = build("AttnDIN", load_col=LOAD_COL, **{**SETTINGS["AttnDIN"], "embedding_size": 16, "attention_mlp": [16]})
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(8):
        for batch in train:
            opt.zero_grad()
            model.calculate_loss(batch).backward()
            opt.step()
    model.eval()
    rows = test._dataset.inter_feat
    rows = rows[(rows[model.ITEM_SEQ_LEN] >= 3).nonzero().flatten()]
    scores, (amap,) = explain_batch(model, rows)
    w = amap.values[:, 0, 0].masked_fill(~amap.key_mask, float("nan"))
    moved = {}
    for which, pick in (("max", w.nan_to_num(-1.0).argmax(1)), ("min", w.nan_to_num(2.0).argmin(1))):
        seq = rows[model.ITEM_SEQ].clone()
        keep = torch.ones_like(seq, dtype=torch.bool).scatter_(1, pick.unsqueeze(1), False)
        dropped = torch.stack([torch.cat([s[k], s.new_zeros(1)]) for s, k in zip(seq, keep)])
        edited = rows.repeat(1)
        edited.update(Interaction({model.ITEM_SEQ: dropped, model.ITEM_SEQ_LEN: rows[model.ITEM_SEQ_LEN] - 1}))
        with torch.no_grad():
            moved[which] = (model.predict(edited) - scores).abs().mean().item()
    assert moved["max"] > moved["min"], moved


def test_item_names_come_from_a_title_column(tmp_path):
    import recbole

    ml = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    config = {"data_path": str(ml), "dataset": "ml-100k", "field_separator": "\t"}
    names = item_names(config, SimpleNamespace(iid_field="item_id"))
    assert names["1"] == "Toy Story" and len(names) == 1682
    tiny = {"data_path": str(Path(__file__).parent / "fixtures" / "tiny"), "dataset": "tiny", "field_separator": "\t"}
    assert item_names(tiny, SimpleNamespace(iid_field="item_id")) == {}  # category only


def test_command_line_writes_json_and_pngs_and_names_a_bad_user(ranker, tmp_path, capsys):
    _, path = ranker
    out = tmp_path / "out"
    assert cli.main(["explain", str(path), "--user", "1", "--items", "2", "--k", "3", "--out", str(out), "--held-out"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0].endswith("AttRec-user1.json") and all(Path(p).stat().st_size > 0 for p in printed)
    saved = json.loads(Path(printed[0]).read_text())
    assert saved["held_out_item"]["id"] in [e["id"] for e in saved["items"]] and 4 <= len(saved["items"]) <= 5
    assert cli.main(["explain", str(path), "--user", "nobody", "--out", str(out)]) == 2
    assert "user 'nobody'" in capsys.readouterr().err
