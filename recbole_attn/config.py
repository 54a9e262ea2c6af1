"""RecBole's ``Config``, taught to find plugin models, their YAML and CPU distributed runs.

Layering, lowest first (each later source wins):

1. RecBole's internal files (``overall.yaml``, the model's own YAML for a built-in,
   dataset presets, the quick-start files for the model type);
2. ours: ``properties/overall.yaml``, ``properties/model/<Class>.yaml`` for a plugin
   model, ``properties/dataset/<name>.yaml`` when we ship a preset (its top-level keys
   and its section for this model, see ``preset_for_model``);
3. the user's config files, then ``config_dict``, then ``--key=value`` on the command line.

Then the defaults that depend on the dataset's files (``recbole_attn.fields``): the time
field, RecBole's ``selected_features``, ATRank without a behaviour field, and a check
that every field a model option names is loaded.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
from pathlib import Path

import torch
import yaml

from recbole_attn import compat

compat.apply()

from recbole.config import Config as RecBoleConfig  # noqa: E402
from recbole.utils import ModelType  # noqa: E402
from recbole.utils import get_model as recbole_get_model  # noqa: E402

from recbole_attn.fields import set_field_defaults  # noqa: E402

PROPERTIES_DIR = Path(__file__).resolve().parent / "properties"


class ConfigError(ValueError):
    """Bad user input: an unknown model, a missing dataset, a mistyped option."""


class DatasetNotFoundError(ConfigError, FileNotFoundError):
    """The dataset's atomic files are not where the config says."""


def plugin_models() -> dict[str, type]:
    """Name -> class of every plugin model."""
    from recbole_attn.model import MODELS

    return MODELS


@functools.lru_cache(maxsize=None)
def builtin_model_names() -> tuple[str, ...]:
    """Class names of RecBole's built-in models."""
    from recbole.model.abstract_recommender import AbstractRecommender

    names = set()
    for sub in (
        "general_recommender",
        "context_aware_recommender",
        "sequential_recommender",
        "knowledge_aware_recommender",
        "exlib_recommender",
    ):
        try:
            pkg = importlib.import_module(f"recbole.model.{sub}")
        except ImportError:  # exlib models need xgboost / lightgbm, which are optional
            continue
        for mod in pkgutil.iter_modules(pkg.__path__):
            module = importlib.import_module(f"{pkg.__name__}.{mod.name}")
            names.update(
                name
                for name, obj in vars(module).items()
                if isinstance(obj, type)
                and issubclass(obj, AbstractRecommender)
                and obj.__module__ == module.__name__
                and name.lower() == mod.name
            )
    return tuple(sorted(names))


def get_model(name: str) -> type:
    """Resolve a model name: plugin models first, then RecBole's built-ins.

    Raises:
        ConfigError: unknown name; the message lists plugin and built-in models.
    """
    plugins = plugin_models()
    if name in plugins:
        return plugins[name]
    builtins = builtin_model_names()
    if name not in builtins:
        raise ConfigError(
            f"unknown model '{name}'. Plugin models: {', '.join(sorted(plugins))}. "
            f"RecBole built-in models: {', '.join(builtins)}"
        )
    return recbole_get_model(name)  # sine.py, which turns anomaly mode on, was imported by compat


def _load_yaml(path: Path, loader) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f.read(), Loader=loader) or {}


def recbole_config_dir() -> str:
    """The folder of the installed ``recbole`` package."""
    import recbole

    return os.path.dirname(recbole.__file__)


def preset_for_model(preset: dict, model: str, path: Path) -> dict:
    """A dataset preset as ``model`` sees it: its top-level keys plus the section ``model:``.

    A preset key named after a model (capitalised, a mapping) is that model's section;
    the sections of other models are dropped, so their keys never reach this run.

    Raises:
        ConfigError: a section names no plugin or built-in model.
    """
    out = {}
    for key, value in preset.items():
        if not (isinstance(value, dict) and key[:1].isupper()):
            out[key] = value
        elif key not in plugin_models() and key not in builtin_model_names():
            raise ConfigError(f"{path}: section '{key}' names no plugin or built-in model")
    section = preset.get(model)
    if isinstance(section, dict):
        out.update(section)
    return out


def _type_matches(default, value) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


class Config(RecBoleConfig):
    """``recbole.config.Config`` that also knows recbole-attn's models and presets.

    Args:
        model: a plugin or built-in model name, or a model class.
        dataset: dataset name; its atomic files live in ``<data_path>/<dataset>/``
            (``ml-100k`` is read from RecBole's wheel).
        config_file_list: YAML files, later ones win.
        config_dict: parameters, winning over files; ``--key=value`` wins over both.
    """

    def _load_config_files(self, file_list):
        missing = [f for f in file_list or [] if not os.path.isfile(f)]
        if missing:
            raise ConfigError(
                f"config file(s) not found: {', '.join(missing)} (from {os.getcwd()}). "
                "--config_files takes space-separated paths of existing YAML files, "
                'e.g. --config_files="a.yaml b.yaml"'
            )
        return super()._load_config_files(file_list)

    def _get_model_and_dataset(self, model, dataset):
        if isinstance(model, str):
            model = get_model(model)
        elif model is None and isinstance(self.external_config_dict.get("model"), str):
            model = get_model(self.external_config_dict["model"])
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        self.plugin_defaults: dict = {}
        if model in plugin_models():
            model_yaml = PROPERTIES_DIR / "model" / f"{model}.yaml"
            if not model_yaml.is_file():
                raise FileNotFoundError(f"plugin model {model} has no YAML at {model_yaml}")
            self.plugin_defaults = _load_yaml(model_yaml, self.yaml_loader)
        overall = PROPERTIES_DIR / "overall.yaml"
        preset = PROPERTIES_DIR / "dataset" / f"{dataset}.yaml"
        self.internal_config_dict.update(_load_yaml(overall, self.yaml_loader))
        self.internal_config_dict.update(self.plugin_defaults)
        self.preset_dict = preset_for_model(_load_yaml(preset, self.yaml_loader), model, preset) if preset.is_file() else {}
        self.internal_config_dict.update(self.preset_dict)

    def _set_default_parameters(self):
        self._check_plugin_types()
        cfg = self.final_config_dict
        # RecBole 1.2.1's overall.yaml samples one training negative while its own check
        # requires none for a sequential model with CE loss, so `--model=SASRec` raises
        # unless the user disables sampling. Disable it unless the user set it.
        if (
            cfg.get("loss_type") == "CE"
            and cfg["MODEL_TYPE"] == ModelType.SEQUENTIAL
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            cfg["train_neg_sample_args"] = None
        super()._set_default_parameters()
        self._check_dataset_path()
        self.field_notes: list[str] = set_field_defaults(self, self._model_yaml_keys(), set(self.preset_dict), ConfigError)

    def _model_yaml_keys(self) -> set[str]:
        """Keys of the model's YAML: ours for a plugin model, RecBole's for a built-in."""
        if self.model in plugin_models():
            return set(self.plugin_defaults)
        path = Path(recbole_config_dir()) / "properties" / "model" / f"{self.model}.yaml"
        return set(_load_yaml(path, self.yaml_loader)) if path.is_file() else set()

    def _check_plugin_types(self) -> None:
        """A plugin key set by the user must have the type of its YAML default."""
        for key, default in self.plugin_defaults.items():
            if key not in self.external_config_dict:
                continue
            value = self.external_config_dict[key]
            if not _type_matches(default, value):
                raise ConfigError(
                    f"config key '{key}' of {self.model} expects {type(default).__name__} "
                    f"(default {default!r} in properties/model/{self.model}.yaml), "
                    f"got {type(value).__name__} {value!r}"
                )

    def _check_dataset_path(self) -> None:
        path = Path(self.final_config_dict["data_path"])
        benchmark = self.final_config_dict.get("benchmark_filename")
        inter_files = (
            [path / f"{self.dataset}.{part}.inter" for part in benchmark]
            if benchmark
            else [path / f"{self.dataset}.inter"]
        )
        missing = [str(p.resolve()) for p in inter_files if not p.is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"dataset '{self.dataset}' not found: looked for {', '.join(missing)} "
                f"(data_path={self.external_config_dict.get('data_path', 'dataset/')!r} "
                f"from {os.getcwd()}). Put the atomic files in <data_path>/{self.dataset}/ "
                "or pass --data_path=DIR (the folder that holds the dataset's folder)."
            )

    def _init_device(self):
        """RecBole's device set-up, plus torch.distributed with gloo where CUDA is absent."""
        if "local_rank" not in self.final_config_dict or torch.cuda.is_available():
            return super()._init_device()
        cfg = self.final_config_dict
        cfg["gpu_id"] = str(cfg["gpu_id"])
        torch.distributed.init_process_group(
            backend="gloo",
            rank=cfg["local_rank"] + cfg["offset"],
            world_size=cfg["world_size"],
            init_method=f"tcp://{cfg['ip']}:{cfg['port']}",
        )
        cfg["device"] = torch.device("cpu")
        cfg["single_spec"] = False
        if cfg["local_rank"] != 0:
            cfg["state"] = "error"
            cfg["show_progress"] = False
            cfg["verbose"] = False
