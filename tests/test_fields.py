"""The one atomic-file header reader behind ``atomic_fields`` and ``dataset_fields``."""

from __future__ import annotations

from recbole_attn.fields import atomic_fields, dataset_fields, header_fields


def test_header_fields_read_names_and_types_in_order(tmp_path):
    path = tmp_path / "shop.inter"
    path.write_text("user_id:token\t item_id:token \trating:float\r\n1\t2\t3\r\n", encoding="utf-8")
    assert list(header_fields(path).items()) == [("user_id", "token"), ("item_id", "token"), ("rating", "float")]
    path.write_text("user_id:token,item_id:token\n", encoding="utf-8")
    assert header_fields(path, separator=",") == {"user_id": "token", "item_id": "token"}


def test_dataset_fields_cover_every_file_of_the_dataset_and_skip_unreadable_ones(tmp_path):
    (tmp_path / "shop.inter").write_text("user_id:token\titem_id:token\n", encoding="utf-8")
    (tmp_path / "shop.item").write_text("item_id:token\tbrand:token\n", encoding="utf-8")
    (tmp_path / "shop.train.inter").write_text("user_id:token\ttimestamp:float\n", encoding="utf-8")
    (tmp_path / "shop.bin").write_bytes(b"\xff\xfe\x00binary")
    (tmp_path / "other.inter").write_text("not_ours:token\n", encoding="utf-8")
    assert dataset_fields(tmp_path, "shop") == {"user_id", "item_id", "brand", "timestamp"}
    assert dataset_fields(tmp_path / "missing", "shop") == set()


def test_atomic_fields_use_the_same_reader_per_source(tmp_path):
    (tmp_path / "shop.inter").write_text("user_id:token\titem_id:token\n", encoding="utf-8")
    (tmp_path / "shop.item").write_text("item_id:token\tbrand:token_seq\n", encoding="utf-8")
    config = {"data_path": str(tmp_path), "dataset": "shop", "benchmark_filename": None, "encoding": None,
              "field_separator": None}
    assert atomic_fields(config) == {
        "inter": header_fields(tmp_path / "shop.inter"),
        "item": {"item_id": "token", "brand": "token_seq"},
        "user": {},
    }
