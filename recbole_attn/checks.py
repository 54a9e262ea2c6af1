"""Strict configuration: unknown keys, documented types and ranges, metric consistency.

Every key of a YAML under ``properties/`` is commented ``# (type) meaning [range]``; this
module parses those comments, so the documentation is the validation:

- ``(type)``: ``int``, ``float`` (an int is accepted), ``str``, ``bool``, ``list``,
  ``dict``, or alternatives joined by ``or`` (``(list or int)``). ``~`` is accepted
  only where the documented default is ``~``.
- ``[range]`` at the end of the comment: an interval ``[0, 1]``, ``[0, 1)``, ``(0, 1]``
  (an upper bound in words, ``[1, number of items]``, is checked on the data, not here);
  conditions ``[>=1]``, ``[>0]``, ``[>=1, divides hidden_size]``, ``[>=1, divisible by
  n_heads]``, ``[>=2, even]``, ``[each >=1]`` (every element of a list); or choices (each element of a list value)
  ``[dist, inner]``.

The specs of a run are, later ones winning: ``properties/checks/recbole.yaml`` (RecBole's
own keys, not loaded as settings), our ``overall.yaml``, the plugin model's YAML and the
dataset preset. A key nobody documents is an error with the nearest known key
(``did you mean `epochs`?``): the known keys are derived, never listed by hand, from
RecBole's and our YAMLs, the keys RecBole's and our code read (``config["key"]``), and
the dataset's field names. ``allow_unknown_keys: [my_key]`` lets a user pass keys of
their own.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from recbole_attn.errors import ConfigError

PROPERTIES_DIR = Path(__file__).resolve().parent / "properties"
RECBOLE_SPECS = PROPERTIES_DIR / "checks" / "recbole.yaml"
ALLOW_KEY = "allow_unknown_keys"

_KEY_LINE = re.compile(r"^([A-Za-z_][\w-]*)\s*:(.*?)\s#\s?(.*)$")
_TYPE = re.compile(r"^\((\w+(?: or \w+)*)\)\s*(.*)$")
_TRAILING = re.compile(r"([\[(][^\[\]()]*[\])])\s*\.?\s*$")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CONDITION = re.compile(rf"^(each\s+)?(?:(>=|>|<=|<)\s*({_NUM})|(even)|divides\s+(\w+)|divisible by\s+(\w+))$")
_PY_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": (list, tuple), "dict": dict}
_OPS = {">=": float.__ge__, ">": float.__gt__, "<=": float.__le__, "<": float.__lt__}


# --------------------------------------------------------------------------- ranges


class Range:
    """A parsed ``[range]``: ``problem(key, value, config)`` says why a value is outside it."""

    def __init__(self, text: str):
        self.text = text
        self.interval = self.conditions = self.choices = None
        opening, body, closing = text[0], text[1:-1], text[-1]
        parts = [p.strip() for p in body.split(",")]
        if len(parts) == 2 and re.fullmatch(_NUM, parts[0]) and re.fullmatch(rf"{_NUM}|[a-z][a-z ]*", parts[1]):
            high = float(parts[1]) if re.fullmatch(_NUM, parts[1]) else None  # words: a data bound
            self.interval = (float(parts[0]), high, opening == "[", closing == "]")
        elif opening != "[" or closing != "]":
            raise ValueError(f"cannot parse range {text}: only an interval may use ( or )")
        elif all(_CONDITION.match(p) for p in parts):
            self.conditions = [_CONDITION.match(p).groups() for p in parts]
        elif all(re.fullmatch(r"[\w.-]+", p) for p in parts):
            self.choices = [yaml.safe_load(p) for p in parts]
        else:
            raise ValueError(f"cannot parse range {text}")

    def problem(self, key: str, value, config: dict, divisible: bool = True) -> str | None:
        """None if ``value`` of ``key`` is inside the range, else ``<key> must ..., got <value>``
        (``divisible=False`` skips ``divisible by`` conditions)."""
        got = f", got {value!r}"
        if self.choices is not None:
            values = list(value) if isinstance(value, (list, tuple)) else [value]  # a list: each element
            bad = [v for v in values if v not in self.choices]
            every = "every element of " if isinstance(value, (list, tuple)) else ""
            return f"{every}{key} must be one of {', '.join(map(str, self.choices))}{got}" if bad else None
        if self.interval is not None:
            low, high, low_closed, high_closed = self.interval
            if not _is_number(value):
                return None  # the type check reports it
            ok = (value >= low if low_closed else value > low) and (
                high is None or (value <= high if high_closed else value < high)
            )
            return None if ok else f"{key} must be in {self.text}{got}"
        for each, op, bound, even, divides, divisible_by in self.conditions:
            values = list(value) if each and isinstance(value, (list, tuple)) else [value]
            every = "every element of " if each else ""
            for v in values:
                if not _is_number(v):
                    if each:
                        return f"{key} must be a list of numbers {self.text}{got}"
                    continue
                if op and not _OPS[op](float(v), float(bound)):
                    return f"{every}{key} must be {op} {bound}{got}"
                if even and v % 2:
                    return f"{every}{key} must be even{got}"
                other = config.get(divides or divisible_by)
                if divides and _is_number(other) and v and other % v:
                    return f"{key} ({v}) must divide {divides} ({other})"
                if divisible and divisible_by and _is_number(other) and other and v % other:
                    return f"{key} ({v}) must be divisible by {divisible_by} ({other})"
        return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class KeySpec:
    """One documented key: ``(types) meaning [range]`` and its default, from ``source``."""

    key: str
    default: object
    types: tuple[str, ...]
    meaning: str
    range: Range | None
    source: str  # the YAML, relative to the package (e.g. properties/model/AttRec.yaml)

    def problem(self, value, config: dict, divisible: bool = True) -> str | None:
        """None if ``value`` fits the type and range, else the error message."""
        where = f"{self.source}: default {self.default!r}"
        if value is None:
            if self.default is None:
                return None
            return f"config key '{self.key}' expects {' or '.join(self.types)} ({where}), got None"
        if self.types and not any(_fits(t, value) for t in self.types):
            return (
                f"config key '{self.key}' expects {' or '.join(self.types)} ({where}), "
                f"got {type(value).__name__} {value!r}"
            )
        why = self.range.problem(self.key, value, config, divisible) if self.range else None
        return f"{why} ({self.meaning}; {self.source})" if why else None


def _fits(type_name: str, value) -> bool:
    if type_name in ("int", "float") and isinstance(value, bool):
        return False
    return isinstance(value, _PY_TYPES.get(type_name, object))


def trailing_range(comment: str) -> str | None:
    """The ``[range]`` (or ``(a, b]`` interval) that ends a key's comment, if any.

    A bracketed group opened with ``[`` is a range and must parse; one opened with ``(``
    is a range only if it parses as an interval (otherwise it is a remark like ``(paper: 5).``).
    """
    match = _TRAILING.search(comment)
    if not match:
        return None
    text = match.group(1)
    if text.startswith("("):
        try:
            return text if Range(text).interval else None
        except ValueError:
            return None
    return text


@functools.lru_cache(maxsize=None)
def yaml_specs(path: Path) -> dict[str, KeySpec]:
    """Top-level key -> spec of one of our YAMLs; a ``[range]`` that does not parse is skipped
    here (``tests/test_config.py`` requires every one to parse)."""
    from recbole.config import Config as RecBoleConfig

    text = path.read_text(encoding="utf-8")
    defaults = yaml.load(text, Loader=RecBoleConfig._build_yaml_loader(None)) or {}
    source = path.relative_to(PROPERTIES_DIR.parent).as_posix()
    specs = {}
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if not match or match.group(1) not in defaults:
            continue
        key, comment = match.group(1), match.group(3).strip()
        typed = _TYPE.match(comment)
        types, meaning = (tuple(typed.group(1).split(" or ")), typed.group(2)) if typed else ((), comment)
        range_text = trailing_range(meaning)
        try:
            parsed = Range(range_text) if range_text else None
        except ValueError:
            parsed = None
        if range_text:
            meaning = meaning[: meaning.rfind(range_text)].strip()
        specs[key] = KeySpec(key, defaults[key], types, meaning.rstrip("."), parsed, source)
    return specs


def specs_for(model: str, dataset: str, plugin: bool) -> dict[str, KeySpec]:
    """The specs of a run, later sources winning (see the module docstring)."""
    paths = [RECBOLE_SPECS, PROPERTIES_DIR / "overall.yaml"]
    if plugin:
        paths.append(PROPERTIES_DIR / "model" / f"{model}.yaml")
    paths.append(PROPERTIES_DIR / "dataset" / f"{dataset}.yaml")
    specs: dict[str, KeySpec] = {}
    for path in paths:
        if not path.is_file():
            continue
        for key, spec in yaml_specs(path).items():
            earlier = specs.get(key)
            if earlier and spec.range is None and earlier.range is not None:  # a later YAML that
                spec = replace(spec, range=earlier.range, meaning=earlier.meaning, source=earlier.source)
            specs[key] = spec  # documents no range keeps the earlier one
    return specs


def check_values(config: dict, specs: dict[str, KeySpec], user_keys=()) -> None:
    """Every documented key's final value has its type and lies in its range; the keys the
    user set (``user_keys``) are checked first, so a cross-key range names the key they set;
    ``a [divisible by b]`` is checked last, so where ``b [divides a]`` too, that one is named."""
    order = [k for k in user_keys if k in specs] + [k for k in specs if k not in user_keys]
    for divisible in (False, True):
        for key in order:
            if key in config:
                problem = specs[key].problem(config[key], config, divisible)
                if problem:
                    raise ConfigError(problem)


# --------------------------------------------------------------------------- known keys

_CODE_KEY = re.compile(r"""(?:config|config_dict)\[\s*["']([A-Za-z_]\w*)["']\s*\]""")
_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:", re.M)


def _yaml_keys(root: Path) -> set[str]:
    return {k for p in root.rglob("*.yaml") for k in _TOP_KEY.findall(p.read_text(encoding="utf-8"))}


def _code_keys(root: Path) -> set[str]:
    return {k for p in root.rglob("*.py") for k in _CODE_KEY.findall(p.read_text(encoding="utf-8"))}


@functools.lru_cache(maxsize=None)
def known_keys() -> frozenset[str]:
    """RecBole's and recbole-attn's keys: every YAML key of both packages, every
    ``config["key"]`` both packages read, and RecBole's argument lists."""
    import recbole
    from recbole.utils import argument_list

    recbole_root = Path(recbole.__file__).resolve().parent
    ours = PROPERTIES_DIR.parent
    keys = _yaml_keys(recbole_root / "properties") | _yaml_keys(PROPERTIES_DIR)
    keys |= _code_keys(recbole_root) | _code_keys(ours)
    for name in ("general_arguments", "training_arguments", "evaluation_arguments", "dataset_arguments"):
        keys.update(getattr(argument_list, name))
    return frozenset(keys)


def suggestion(key: str, known) -> str:
    """`` did you mean `x`?`` for the nearest known key (case-insensitive), or ''."""
    lower = {k.lower(): k for k in known}
    match = difflib.get_close_matches(key.lower(), list(lower), n=1, cutoff=0.8)
    return f"; did you mean `{lower[match[0]]}`?" if match else ""


def check_unknown_keys(external: dict, sources: dict[str, str], allowed, fields: set[str]) -> None:
    """Every key the user set is known, a dataset field or listed in ``allow_unknown_keys``.

    Args:
        external: the user's keys (files, config_dict, command line) -> values.
        sources: key -> where the user set it (a file, ``config_dict``, the command line).
        allowed: the value of ``allow_unknown_keys`` (a list of key names, or None).
        fields: the dataset's field names.
    """
    if allowed is None:
        allowed = []
    if isinstance(allowed, str):
        allowed = [allowed]
    if not isinstance(allowed, (list, tuple)) or not all(isinstance(k, str) for k in allowed):
        raise ConfigError(f"{ALLOW_KEY} expects a list of key names (e.g. [my_key]), got {allowed!r}")
    known = known_keys() | fields
    unknown = [k for k in external if k not in known and k not in allowed]
    if not unknown:
        return
    described = ", ".join(f"'{k}' ({sources.get(k, 'config')}{suggestion(k, known)})" for k in unknown)
    raise ConfigError(
        f"unknown config key{'s' if len(unknown) > 1 else ''} {described}: not an option of RecBole or "
        f"recbole-attn nor a field of the dataset. Fix the spelling, or list keys of your own in "
        f"{ALLOW_KEY} (e.g. {ALLOW_KEY}=[{unknown[0]}])"
    )


# --------------------------------------------------------------------------- consistency


def check_metrics(config: dict) -> None:
    """``metrics`` are RecBole metrics of one kind, ``valid_metric`` is one of them (with
    a cut-off in ``topk`` for a ranking metric)."""
    from recbole.evaluator import metric_types
    from recbole.utils import EvaluatorType

    metrics = config.get("metrics")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics or [])
    unknown = [m for m in metrics if not isinstance(m, str) or m.lower() not in metric_types]
    if unknown:
        raise ConfigError(
            f"metrics {unknown} are not RecBole metrics; known: {', '.join(sorted(metric_types))}"
        )
    kinds = {metric_types[m.lower()] for m in metrics}
    if len(kinds) > 1:
        ranking = [m for m in metrics if metric_types[m.lower()] == EvaluatorType.RANKING]
        value = [m for m in metrics if m not in ranking]
        raise ConfigError(
            f"metrics mixes ranking metrics {ranking} and value metrics {value}: "
            "RecBole evaluates one kind per run"
        )
    valid = config.get("valid_metric")
    if not isinstance(valid, str) or not metrics:
        return
    topk = config.get("topk")
    topk = [topk] if isinstance(topk, int) else list(topk or [])
    name, at, cutoff = valid.partition("@")
    ranking = kinds == {EvaluatorType.RANKING}
    choices = [f"{m}@{k}" for m in metrics for k in topk] if ranking else metrics
    hint = f"; choose one of {', '.join(choices)}" if choices else ""
    if name.lower() not in {m.lower() for m in metrics}:
        raise ConfigError(f"valid_metric '{valid}' is not among metrics {metrics}: add {name} to metrics{hint}")
    if ranking and (not cutoff.isdigit() or int(cutoff) not in topk):
        raise ConfigError(f"valid_metric '{valid}' needs a cut-off from topk {topk}{hint}")
    if not ranking and at:
        raise ConfigError(f"valid_metric '{valid}': {name} is a value metric and takes no cut-off{hint}")


def check_processes(nproc, world_size) -> None:
    """``nproc`` >= 1 and ``world_size`` -1 (= nproc) or at least nproc."""
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ConfigError(f"--nproc={nproc}: the number of processes on this machine must be >= 1")
    if isinstance(world_size, int) and 0 < world_size < nproc:
        raise ConfigError(
            f"--world_size={world_size} is smaller than --nproc={nproc}: pass -1 (= nproc) or the "
            "number of processes on all machines"
        )


# --------------------------------------------------------------------------- config files


def load_config_files(files, loader, sources: dict[str, str]) -> dict:
    """RecBole's ``_load_config_files`` with errors that name the file (and the YAML line).

    Args:
        files: the YAML paths, later ones winning (None: no file).
        loader: the YAML loader of RecBole's ``Config``.
        sources: filled with key -> the file that set it.
    """
    merged: dict = {}
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    missing = [os.fspath(f) for f in files or [] if not os.path.isfile(os.fspath(f))]
    if missing:
        raise ConfigError(
            f"config file(s) not found: {', '.join(missing)} (--config_files / config_file_list, "
            f"looked from {os.getcwd()}); --config_files takes space-separated paths of existing "
            'YAML files, e.g. --config_files="a.yaml b.yaml"'
        )
    for file in files or []:
        path = os.fspath(file)
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.load(f.read(), Loader=loader)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"config file '{path}' is not valid YAML:{line}: {problem}") from err
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read config file '{path}': {err}") from err
        if loaded is None:
            continue
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file '{path}' must hold key: value lines, got a {type(loaded).__name__}"
            )
        merged.update(loaded)
        sources.update({k: f"config file {path}" for k in loaded})
    return merged


# --------------------------------------------------------------------------- checkpoints


def read_checkpoint(path, load) -> dict:
    """``load(path)`` (``trainer.load_checkpoint``), with a ``ConfigError`` naming ``path`` for
    a missing, truncated, foreign or older-version file."""
    from recbole.config import Config as RecBoleConfig

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path} not found")
    try:
        checkpoint = load(path)
    except (ModuleNotFoundError, ImportError, AttributeError) as err:
        raise ConfigError(
            f"checkpoint {path} was written by another version of recbole-attn or RecBole ({err}): "
            "load it with that version, or train the model again"
        ) from err
    except Exception as err:  # torch/pickle raise many types for a damaged file
        raise ConfigError(
            f"cannot read checkpoint {path}: the file is truncated or not a checkpoint "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    missing = {"config", "state_dict"} - set(checkpoint) if isinstance(checkpoint, dict) else None
    if missing is None or missing:
        what = f"a dict without {sorted(missing)}" if missing else f"a {type(checkpoint).__name__}"
        raise ConfigError(
            f"{path} is not a checkpoint of RecBole or recbole-attn (one holds a dict with config and "
            f"state_dict; this file holds {what})"
        )
    if not isinstance(checkpoint["config"], RecBoleConfig):
        raise ConfigError(
            f"checkpoint {path} stores its config as a {type(checkpoint['config']).__name__}, not a RecBole "
            "Config: it was written by another version; train the model again"
        )
    return checkpoint


def load_weights(model, checkpoint: dict, path) -> None:
    """``model.load_state_dict`` of a checkpoint; a mismatch names the file and the model."""
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise ConfigError(
            f"checkpoint {os.fspath(path)} does not fit model {type(model).__name__} of this version "
            f"({str(err).splitlines()[0]} ...): it was written by another version; train the model again"
        ) from err
