"""Any dataset, no hand-written options: a tiny S3Rec-format dataset under a name we ship no
preset for, converted with ``recbole-attn convert s3rec``, trains every plugin model and
RecBole's SASRec, SASRecF and DIN, and each feature-using model reads the item attributes.

Each run passes ``--data_path`` and only ``epochs=1`` (one epoch keeps the file under a
minute on a 2-core CPU) and ``show_progress=False``; PRM also ``--ranker=SASRec``, the
ranker it re-ranks. Nothing else is configured: every model runs on its defaults.
"""

from __future__ import annotations

import logging
import re

import pytest

from recbole_attn.cli import main
from recbole_attn.config import PROPERTIES_DIR, Config, ConfigError
from conftest import FIXTURES

NAME = "shop"  # no preset of ours, not a RecBole example
RAW = FIXTURES / "raw"
SIZE_ONLY = ["epochs=1", "show_progress=False"]

# model -> does it read item features (the S3Rec attributes, field `categories`)?
MODELS = {
    "AttRec": False,
    "NOVABERT": True,
    "AttnBERT4Rec": False,
    "AttnDIN": True,
    "AttnDIEN": True,
    "BST": True,
    "ATRank": True,
    "PRM": True,
    "SASRec": False,
    "SASRecF": True,
    "DIN": True,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    assert not (PROPERTIES_DIR / "dataset" / f"{NAME}.yaml").exists()
    out = tmp_path_factory.mktemp("any") / "data"
    argv = ["convert", "s3rec", "--seq", str(RAW / "tiny_s3rec.txt"), "--name", NAME, "--out", str(out)]
    assert main(argv + ["--attributes", str(RAW / "tiny_s3rec_item2attributes.json")]) == 0
    return out


def fields_lines(text: str) -> dict[str, str]:
    """The first 'fields used: <Model> ...' log line of each model."""
    lines: dict[str, str] = {}
    for m in re.finditer(r"fields used: (\w+) .*", text):
        lines.setdefault(m.group(1), m.group(0))
    return lines


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_trains_with_defaults_and_reads_the_item_attributes(model, data, caplog):
    caplog.set_level(logging.INFO)
    ranker = ["--ranker=SASRec"] if model == "PRM" else []
    assert main(["run", f"--model={model}", f"--dataset={NAME}", f"--data_path={data}", *ranker, *SIZE_ONLY]) == 0
    assert "test result" in caplog.text
    line = fields_lines(caplog.text)[model]
    if MODELS[model]:
        assert re.search(r"item (side )?(features|fields): [^;]*\bcategories\b", line), line
    else:
        assert "categories" not in line, line
    if model == "ATRank":  # S3Rec data has no action: one action, one group
        assert "behaviour field: none" in line and "one group" in caplog.text


def test_fields_are_logged_once_per_model(data, caplog):
    caplog.set_level(logging.INFO)
    assert main(["run", "--model=PRM", "--ranker=SASRec", f"--dataset={NAME}", f"--data_path={data}", *SIZE_ONLY]) == 0
    used = [line for line in caplog.text.splitlines() if "fields used:" in line]
    assert [re.search(r"fields used: (\w+)", line).group(1) for line in used] == ["SASRec", "PRM", "PRM"]
    assert "PRM ranker: SASRec no side features" in used[-1]


# ---------------------------------------------------------------- defaults and errors


def config(model: str, data, **options) -> Config:
    return Config(model=model, dataset=NAME, config_dict={"data_path": str(data), **options})


def test_every_column_is_loaded_and_the_time_field_kept_when_narrowed(data):
    assert config("SASRec", data)["load_col"] is None  # RecBole's default would be {inter: [user_id, item_id]}
    narrowed = config("SASRec", data, load_col={"inter": ["user_id", "item_id"]})
    assert narrowed["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}  # order: TO needs it
    assert any("time field timestamp added" in note for note in narrowed.field_notes)


def test_selected_features_default_to_the_item_token_features(data):
    assert config("SASRecF", data)["selected_features"] == ["categories"]
    assert config("SASRecF", data, selected_features=["categories"])["selected_features"] == ["categories"]


def test_a_missing_field_is_named_with_the_files_fields_and_the_option(data):
    with pytest.raises(ConfigError) as err:
        config("SASRec", data, TIME_FIELD="ts")
    message = str(err.value)
    assert "TIME_FIELD='ts'" in message and "shop.inter: user_id:token, item_id:token, timestamp:float" in message
    assert "Set TIME_FIELD" in message
    with pytest.raises(ConfigError, match=r"item_fields=\['brand'\].*not a column of shop.item.*categories"):
        config("AttnDIN", data, item_fields=["brand"])
    unloaded = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]}
    with pytest.raises(ConfigError, match=r"'categories'.*holds but the config does not load.*load_col"):
        config("AttnDIN", data, item_fields=["categories"], load_col=unloaded)
    with pytest.raises(ConfigError, match=r"behavior_field='action'.*not a column of shop.inter"):
        config("ATRank", data, behavior_field="action")


def test_other_models_preset_keys_stay_out_of_a_run():
    attrec = Config(model="AttRec", dataset="ml-100k")
    atrank = Config(model="ATRank", dataset="ml-100k")
    assert "behavior_field" not in attrec.final_config_dict and "target_action" not in attrec.final_config_dict
    assert atrank["behavior_field"] == "rating" and atrank["target_action"] == "pos"
    assert attrec["load_col"]["item"] == ["item_id", "release_year", "class"]  # the preset narrows ml-100k


# ---------------------------------------------------------------- the newcomer's command line


def test_help_lists_every_subcommand(capsys):
    from recbole_attn.cli import SUBCOMMANDS

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(re.search(rf"^\s+{name}\s", out, re.M) for name in SUBCOMMANDS), out


def test_config_files_missing_or_unquoted_are_named(capsys, tmp_path):
    assert main(["--model=AttRec", '--config_files=a.yaml b.yaml']) == 2
    assert "config file(s) not found: a.yaml, b.yaml" in capsys.readouterr().err
    assert main(["--model=AttRec", "--config_files", "a.yaml", "b.yaml"]) == 2
    assert '--config_files="a.yaml b.yaml"' in capsys.readouterr().err


def test_torch_threads_from_the_config_the_environment_or_the_usable_cores(monkeypatch):
    import os

    from recbole_attn.quick_start import torch_threads

    cfg = Config(model="AttRec", dataset="ml-100k")
    assert cfg["torch_threads"] == 0
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert torch_threads(cfg)[0] == cores
    cfg["nproc"] = 2
    assert torch_threads(cfg)[0] == max(1, cores // 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert torch_threads(cfg)[1] == "OMP_NUM_THREADS"
    cfg["torch_threads"] = 3
    assert torch_threads(cfg) == (3, "torch_threads")


# ---------------------------------------------------------------- presets


def test_a_preset_section_of_an_unknown_model_is_refused(tmp_path):
    from recbole_attn.config import preset_for_model

    preset = {"load_col": None, "ATRank": {"behavior_field": "rating"}, "eval_args": {"order": "TO"}}
    assert preset_for_model(preset, "AttRec", tmp_path) == {"load_col": None, "eval_args": {"order": "TO"}}
    assert preset_for_model(preset, "ATRank", tmp_path)["behavior_field"] == "rating"
    with pytest.raises(ConfigError, match="section 'ATRanc' names no plugin or built-in model"):
        preset_for_model({"ATRanc": {"behavior_field": "rating"}}, "AttRec", tmp_path)


ML_SEQ = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "release_year", "class"], "user": []}
ML_CTR = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "class"], "user": ["user_id", "age", "gender", "occupation"]}


@pytest.mark.parametrize(
    "preset, models, expected",
    [
        ("cpu-ml-100k", ["AttRec", "SASRecF", "NOVABERT", "BERT4Rec"], ML_SEQ),
        ("cpu-ctr-ml-100k", ["AttnDIN", "BST", "ATRank", "DIN"], ML_CTR),
        ("cpu-prm-ml-100k", ["PRM", "SASRec"], ML_SEQ),
    ],
)
def test_benchmark_presets_load_the_fields_they_loaded_before(preset, models, expected):
    """The loaded columns of the recorded benchmarks, as before load_col: ~ became the default."""
    from recbole_attn.fields import atomic_fields, loaded_fields
    from conftest import REPO

    for model in models:
        cfg = Config(model=model, dataset="ml-100k", config_file_list=[str(REPO / "benchmarks" / "presets" / f"{preset}.yaml")])
        loaded = {source: list(fields) for source, fields in loaded_fields(cfg, atomic_fields(cfg)).items()}
        assert loaded == expected, model
