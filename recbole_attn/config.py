"""RecBole's ``Config``, taught to find plugin models, their YAML and CPU distributed runs.

Layering, lowest first (each later source wins):

1. RecBole's internal files (``overall.yaml``, the model's own YAML for a built-in,
   dataset presets, the quick-start files for the model type);
2. ours: ``properties/overall.yaml``, ``properties/model/<Class>.yaml`` for a plugin
   model, ``properties/dataset/<name>.yaml`` when we ship a preset;
3. the user's config files, then ``config_dict``, then ``--key=value`` on the command line.
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
from recbole_attn.errors import ConfigError, DatasetNotFoundError  # noqa: F401  (re-exported)

compat.apply()

from recbole.config import Config as RecBoleConfig  # noqa: E402
from recbole.utils import ModelType  # noqa: E402
from recbole.utils import get_model as recbole_get_model  # noqa: E402

PROPERTIES_DIR = Path(__file__).resolve().parent / "properties"


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
        if preset.is_file():
            self.internal_config_dict.update(_load_yaml(preset, self.yaml_loader))

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
