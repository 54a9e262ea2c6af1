"""Converters from raw S3Rec / Taobao files to RecBole atomic files, their errors and CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import FIXTURES
from recbole_attn.cli import main
from recbole_attn.data.convert import ConvertError, convert_s3rec, convert_taobao

RAW = FIXTURES / "raw"
SEQ = RAW / "tiny_s3rec.txt"
ATTR = RAW / "tiny_s3rec_item2attributes.json"
CSV = RAW / "tiny_taobao.csv"


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in folder.rglob("*")}


def _bad_copy(src: Path, dst: Path, line: int, text: str) -> Path:
    """``src`` with its 1-based ``line`` replaced by ``text``."""
    lines = src.read_text().splitlines()
    lines[line - 1] = text
    dst.write_text("\n".join(lines) + "\n")
    return dst


# ---------------------------------------------------------------- correct output


def test_s3rec_writes_positions_and_attribute_sequences(tmp_path):
    folder = convert_s3rec(SEQ, ATTR, tmp_path / "out", "beauty")
    assert folder == tmp_path / "out" / "beauty"
    assert sorted(p.name for p in folder.iterdir()) == ["beauty.inter", "beauty.item"]

    inter = _rows(folder / "beauty.inter")
    assert inter[0] == ["user_id:token", "item_id:token", "timestamp:float"]
    expected = []
    for line in SEQ.read_text().splitlines():
        user, *items = line.split()
        expected += [[user, item, str(pos)] for pos, item in enumerate(items)]
    assert inter[1:] == expected
    assert inter[1:4] == [["1", "5", "0"], ["1", "13", "1"], ["1", "2", "2"]]

    item = _rows(folder / "beauty.item")
    assert item[0] == ["item_id:token", "categories:token_seq"]
    assert [int(r[0]) for r in item[1:]] == sorted({int(r[1]) for r in expected})
    by_item = dict((r[0], r[1]) for r in item[1:])
    assert by_item["2"] == "1 2 6" and by_item["1"] == "6 8"
    assert by_item["20"] == ""  # item 20 has no attributes entry


def test_s3rec_skips_attributes_of_unknown_items_and_normalises_ids(tmp_path):
    seq = tmp_path / "s.txt"
    seq.write_text("01 007 3\n\n2 3\n")  # a blank line is skipped
    attr = tmp_path / "a.json"
    attr.write_text('{"7": [4, 4, 1], "3": [], "99": [5]}')
    folder = convert_s3rec(seq, attr, tmp_path / "out", "toys")
    assert _rows(folder / "toys.inter")[1:] == [["1", "7", "0"], ["1", "3", "1"], ["2", "3", "0"]]
    assert _rows(folder / "toys.item")[1:] == [["3", ""], ["7", "4 4 1"]]


def test_taobao_writes_behaviours_and_one_category_per_item(tmp_path):
    folder = convert_taobao(CSV, tmp_path)
    assert folder == tmp_path / "taobao"
    raw = [line.split(",") for line in CSV.read_text().splitlines()]

    inter = _rows(folder / "taobao.inter")
    assert inter[0] == ["user_id:token", "item_id:token", "behavior_type:token", "timestamp:float"]
    assert inter[1:] == [[u, i, b, t] for u, i, _, b, t in raw]
    assert inter[1] == ["1", "5", "pv", "1511540135"]

    item = _rows(folder / "taobao.item")
    assert item[0] == ["item_id:token", "category:token"]
    assert item[1:] == [[str(i), c] for i, c in sorted({(int(r[1]), r[2]) for r in raw})]


def test_taobao_category_conflict_can_keep_the_first(tmp_path):
    csv = _bad_copy(CSV, tmp_path / "t.csv", 3, "1,5,999,pv,1511540400")  # item 5 is 101 on line 1
    folder = convert_taobao(csv, tmp_path / "out", "tb", category_conflict="first")
    assert ["5", "101"] in _rows(folder / "tb.item")


# ---------------------------------------------------------------- malformed input

S3REC_SEQ_CASES = [
    (4, "4 19 2 x 20", r"line 4: expected an integer item id \(field 4\), got 'x'"),
    (2, "2.0 17 7", r"line 2: expected an integer user id \(field 1\), got '2.0'"),
    (5, "5", r"line 5: expected 'user item \[item \.\.\.\]'"),
    (7, "3 1 2", r"line 7: expected one line per user, but user 3 is also on line 3"),
]

S3REC_ATTR_CASES = [
    (3, '  "2": [1, 2, 6]', r"line 4: expected a JSON object .*invalid JSON"),  # comma dropped
    (5, '  "4": [3, "6", 8],', r"line 5: item '4': expected a list of non-negative integer attribute ids"),
    (6, '  "x5": [1],', r"line 6: expected an integer item id as key, got 'x5'"),
    (7, '  "1": [1],', r"line 7: expected each item once, but key '1' appears twice"),
]


@pytest.mark.parametrize(
    "bad_file,line,text,message",
    [("seq", *case) for case in S3REC_SEQ_CASES] + [("attr", *case) for case in S3REC_ATTR_CASES],
)
def test_s3rec_malformed_input_names_file_and_line(tmp_path, bad_file, line, text, message):
    source, name = (SEQ, "bad.txt") if bad_file == "seq" else (ATTR, "bad.json")
    bad = _bad_copy(source, tmp_path / name, line, text)
    seq, attr = (bad, ATTR) if bad_file == "seq" else (SEQ, bad)
    with pytest.raises(ConvertError, match=re.escape(str(bad)) + ", " + message):
        convert_s3rec(seq, attr, tmp_path / "out", "beauty")
    assert not (tmp_path / "out").exists()


def test_s3rec_attributes_must_be_an_object(tmp_path):
    attr = tmp_path / "list.json"
    attr.write_text("[[1, 2]]")
    with pytest.raises(ConvertError, match=r"list\.json, line 1: expected a JSON object.*got a JSON list"):
        convert_s3rec(SEQ, attr, tmp_path / "out", "beauty")


TAOBAO_CASES = [
    (3, "1,10,102,pv", r"line 3: expected 5 comma-separated columns user_id,item_id,category_id,"
     r"behavior_type,timestamp, got 4"),
    (4, "1,3,103,buy,1511540888,7", r"line 4: expected 5 comma-separated columns .*got 6"),
    (5, "u1,10,102,pv,1511541375", r"line 5: expected an integer user_id \(column 1\), got 'u1'"),
    (6, "2,14,-3,buy,1511541836", r"line 6: expected an integer category_id \(column 3\), got '-3'"),
    (7, "2,7,103,click,1511542037", r"line 7: expected behavior_type \(column 4\) one of pv, cart, fav, buy, "
     r"got 'click'"),
    (8, "2,2,102,fav,1511542239.5", r"line 8: expected an integer Unix timestamp \(column 5\), "
     r"got '1511542239.5'"),
    (25, "5,9,101,pv,", r"line 25: expected an integer Unix timestamp \(column 5\), got ''"),
    (9, "2,7,104,pv,1511542564", r"line 9: expected one category per item, but item 7 has category 104 here "
     r"and category 103 on line 2"),
]


@pytest.mark.parametrize("line,text,message", TAOBAO_CASES)
def test_taobao_malformed_csv_names_file_and_line(tmp_path, line, text, message):
    csv = _bad_copy(CSV, tmp_path / "bad.csv", line, text)
    with pytest.raises(ConvertError, match=re.escape(str(csv)) + ", " + message):
        convert_taobao(csv, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_convert_error_is_a_value_error_and_bad_names_are_refused(tmp_path):
    assert issubclass(ConvertError, ValueError)
    for name in ("", "a/b", ".."):
        with pytest.raises(ConvertError, match="dataset name"):
            convert_s3rec(SEQ, ATTR, tmp_path, name)
    with pytest.raises(ConvertError, match="missing.csv: cannot read the file"):
        convert_taobao(tmp_path / "missing.csv", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_failed_conversion_keeps_what_was_there_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "out"
    (out / "beauty").mkdir(parents=True)
    (out / "beauty" / "beauty.inter").write_text("old\n")
    (out / "other.txt").write_text("mine\n")
    before = _tree(out)
    seq = _bad_copy(SEQ, tmp_path / "bad.txt", 12, "12 11 12 16 oops")  # fails on the last line
    with pytest.raises(ConvertError, match="line 12"):
        convert_s3rec(seq, ATTR, out, "beauty")
    assert _tree(out) == before

    csv = _bad_copy(CSV, tmp_path / "bad.csv", 25, "5,9,101,pv,x")
    with pytest.raises(ConvertError, match="line 25"):
        convert_taobao(csv, out)
    assert _tree(out) == before

    convert_s3rec(SEQ, ATTR, out, "beauty")  # a good run replaces the old file, no leftovers
    assert sorted(p.name for p in (out / "beauty").iterdir()) == ["beauty.inter", "beauty.item"]
    assert (out / "beauty" / "beauty.inter").read_text().startswith("user_id:token")


# ---------------------------------------------------------------- command line


def test_cli_convert_prints_paths_and_row_counts(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["convert", "s3rec", "--seq", str(SEQ), "--attributes", str(ATTR), "--name", "lastfm", "--out", str(out)]
    assert main(argv) == 0
    n_inter = sum(len(line.split()) - 1 for line in SEQ.read_text().splitlines())
    printed = capsys.readouterr().out
    assert f"wrote {out / 'lastfm' / 'lastfm.inter'}: {n_inter} rows" in printed
    assert f"wrote {out / 'lastfm' / 'lastfm.item'}: 20 rows" in printed
    assert "1 of 20 items have no attributes entry" in printed

    assert main(["convert", "taobao", "--csv", str(CSV), "--out", str(out), "--name", "tb"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'tb' / 'tb.inter'}: 25 rows" in printed
    assert (out / "tb" / "tb.item").is_file()


def test_cli_convert_reports_bad_input_and_returns_2(tmp_path, capsys):
    csv = _bad_copy(CSV, tmp_path / "bad.csv", 2, "1,7,103,buy")
    assert main(["convert", "taobao", "--csv", str(csv), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"recbole-attn: error: {csv}, line 2: expected 5 comma-separated columns")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):  # argparse: --name is required for s3rec
        main(["convert", "s3rec", "--seq", str(SEQ), "--attributes", str(ATTR), "--out", str(tmp_path)])


# ---------------------------------------------------------------- RecBole reads the output


def test_recbole_loads_a_converted_s3rec_dataset_with_the_preset(tmp_path):
    from recbole.data import create_dataset

    from recbole_attn import Config, run

    data = tmp_path / "data"
    convert_s3rec(SEQ, ATTR, data, "beauty")

    config = Config(model="SASRec", dataset="beauty", config_dict={"data_path": str(data)})
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "categories"]}
    assert config["normalize_all"] is False and config["RATING_FIELD"] is None
    dataset = create_dataset(config)
    assert dataset.inter_num == sum(len(line.split()) - 1 for line in SEQ.read_text().splitlines())
    assert dataset.inter_feat["timestamp"].max().item() == 7  # raw positions, not normalised
    categories = dataset.item_feat["categories"]
    item2 = dataset.token2id("item_id", "2")
    assert sorted(dataset.id2token("categories", categories[item2][categories[item2] > 0]).tolist()) == ["1", "2", "6"]
    assert (categories[dataset.token2id("item_id", "20")] == 0).all()  # no attributes: padding only

    result = run(
        "SASRec",
        "beauty",
        config_dict={
            "data_path": str(data),
            "epochs": 1,
            "hidden_size": 8,
            "inner_size": 16,
            "n_layers": 1,
            "n_heads": 1,
            "MAX_ITEM_LIST_LENGTH": 5,
            "show_progress": False,
            "state": "WARNING",
            "checkpoint_dir": str(tmp_path / "saved"),
            "train_batch_size": 32,
            "topk": [5],
            "metrics": ["Recall", "NDCG"],
            "valid_metric": "NDCG@5",
        },
    )
    assert set(result["test_result"]) == {"recall@5", "ndcg@5"}
