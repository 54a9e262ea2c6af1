"""Config layering, model resolution and the bad inputs Config rejects."""

from __future__ import annotations

import re
import sys

import pytest
import yaml

from recbole_attn.config import (
    PROPERTIES_DIR,
    Config,
    ConfigError,
    DatasetNotFoundError,
    builtin_model_names,
    plugin_models,
)
from conftest import REPO, tiny_config


def test_plugin_yaml_is_loaded_on_top_of_recboles_defaults():
    config = Config(model="AttRec", dataset="tiny", config_dict={"data_path": tiny_config()["data_path"]})
    assert config["embedding_size"] == 100  # our AttRec.yaml
    assert config["seq_window"] == 5
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}  # RecBole's sequential preset
    assert config["train_neg_sample_args"]["sample_num"] == 1  # ours, over RecBole's `~`
    assert config["detect_anomaly"] is False  # our overall.yaml


def test_files_then_dict_then_command_line_win(tmp_path, monkeypatch):
    f = tmp_path / "user.yaml"
    f.write_text("embedding_size: 32\nseq_window: 3\nomega: 0.1\n")
    monkeypatch.setattr(sys, "argv", ["x", "--omega=0.9"])
    config = Config(
        model="AttRec",
        dataset="tiny",
        config_file_list=[str(f)],
        config_dict={"data_path": tiny_config()["data_path"], "seq_window": 4},
    )
    assert config["embedding_size"] == 32  # file over our YAML
    assert config["seq_window"] == 4  # dict over file
    assert config["omega"] == 0.9  # command line over everything


def test_builtin_model_gets_recboles_own_yaml():
    config = Config(model="SASRec", dataset="tiny", config_dict={"data_path": tiny_config()["data_path"]})
    assert config["n_layers"] == 2 and config["hidden_act"] == "gelu"
    assert config["detect_anomaly"] is False


def test_plugin_names_never_shadow_builtins():
    builtins = {name.lower() for name in builtin_model_names()}
    assert "sasrec" in builtins and "din" in builtins
    for name in plugin_models():
        assert name.lower() not in builtins


def test_unknown_model_lists_plugin_and_builtin_models():
    with pytest.raises(ConfigError) as err:
        Config(model="NoSuchModel", dataset="ml-100k")
    message = str(err.value)
    assert "NoSuchModel" in message and "AttRec" in message and "SASRec" in message


def test_missing_dataset_names_the_paths_searched(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        Config(model="AttRec", dataset="nowhere", config_dict={"data_path": str(tmp_path)})
    assert str(tmp_path / "nowhere" / "nowhere.inter") in str(err.value)


@pytest.mark.parametrize(
    "key, value", [("seq_window", "five"), ("omega", "high"), ("use_timing_signal", 3)]
)
def test_wrong_type_for_a_plugin_key_names_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        Config(model="AttRec", dataset="tiny", config_dict=tiny_config(**{key: value}))


def test_wrong_type_in_a_yaml_file_names_the_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("seq_window: [1, 2]\n")
    with pytest.raises(ConfigError, match="'seq_window'.*AttRec.yaml"):
        Config(model="AttRec", dataset="tiny", config_file_list=[str(f)], config_dict=tiny_config())


def test_int_is_accepted_for_a_float_key():
    config = Config(model="AttRec", dataset="tiny", config_dict=tiny_config(omega=1))
    assert config["omega"] == 1


def _model_yamls():
    return sorted((PROPERTIES_DIR / "model").glob("*.yaml"))


@pytest.mark.parametrize("path", _model_yamls(), ids=lambda p: p.stem)
def test_every_yaml_key_is_commented_with_its_type(path):
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert re.search(r"#\s*\((int|float|str|bool|dict|list)\)", line), line


@pytest.mark.parametrize("name", sorted(plugin_models()))
def test_every_key_a_plugin_model_reads_is_in_its_yaml_or_recboles(name):
    import inspect

    from recbole.config import Config as RecBoleConfig

    source = inspect.getsource(sys.modules[plugin_models()[name].__module__])
    read = set(re.findall(r"config\[\"(\w+)\"\]", source))
    ours = set(yaml.safe_load((PROPERTIES_DIR / "model" / f"{name}.yaml").read_text()))
    recbole = set(RecBoleConfig(model="BPR", dataset="ml-100k").final_config_dict)
    missing = read - ours - recbole
    assert not missing, f"{name} reads keys no YAML defines: {missing}"


def test_properties_are_at_the_top_level_and_in_the_package():
    assert (REPO / "properties" / "model" / "AttRec.yaml").is_file()
    assert (PROPERTIES_DIR / "model" / "AttRec.yaml").is_file()
    assert PROPERTIES_DIR.parent.name == "recbole_attn"


def test_sequential_ce_model_needs_no_negative_sampling_setting():
    # RecBole 1.2.1 alone raises "train_neg_sample_args ... should be None" for SASRec.
    config = Config(model="SASRec", dataset="ml-100k")
    assert config["train_neg_sample_args"]["distribution"] == "none"
    with pytest.raises(ValueError, match="should be None"):
        Config(
            model="SASRec",
            dataset="ml-100k",
            config_dict={"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
        )
