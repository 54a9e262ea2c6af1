"""Runners for plugin and built-in models: RecBole's quick_start without ray.

``recbole.quick_start`` imports ray at module level and looks models up inside
``recbole.model`` only; this module is its counterpart for both kinds of model, with the
same signatures and return values.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from collections.abc import MutableMapping
from logging import getLogger

import torch
import torch.distributed as dist

from recbole_attn.checks import check_processes, load_weights, read_checkpoint
from recbole_attn.compiled import compile_model
from recbole_attn.config import Config, get_model
from recbole_attn.errors import ConfigError
from recbole_attn.data.checks import data_preparation
from recbole_attn.data.windows import create_dataset
from recbole_attn.fields import fields_used
from recbole_attn.trainer import (
    CheckpointError,
    check_writable,
    get_trainer,
    load_checkpoint,
    unique_checkpoint_name,
)

from recbole.data.transform import construct_transform
from recbole.utils import get_environment, get_flops, init_logger, init_seed, set_color
from recbole.utils.logger import RemoveColorFilter, log_colors_config


def torch_threads(config: Config) -> tuple[int, str]:
    """Intra-op threads for this process and why: ``torch_threads`` if > 0, else torch's own
    (OMP_NUM_THREADS) if that is set, else the cores this process may use divided among
    the ``nproc`` processes of this machine."""
    if config["torch_threads"]:
        return int(config["torch_threads"]), "torch_threads"
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads(), "OMP_NUM_THREADS"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    nproc = config["nproc"] or 1
    return max(1, cores // nproc), f"automatic: {cores} usable cores / {nproc} process(es)"


def prepare(config: Config, log: bool, with_trainer: bool = True):
    """Dataset, splits, model and (optionally) trainer for a config, seeded as RecBole does.

    Sets torch's intra-op threads (``torch_threads``); with ``log``, logs the dataset, the
    model, the thread count and, once, the fields each model reads (``fields_used``).
    """
    logger = getLogger()
    torch.autograd.set_detect_anomaly(bool(config["detect_anomaly"]))
    threads, why = torch_threads(config)
    torch.set_num_threads(threads)
    dataset = create_dataset(config)
    if log:
        logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_class = get_model(config["model"])
    model = model_class(config, train_data._dataset).to(config["device"])
    if log:
        logger.info(model)
        logger.info(set_color("torch threads", "blue") + f": {threads} ({why})")
        for note in getattr(config, "field_notes", []):
            logger.info(set_color("field defaults", "blue") + f": {note}")
        for line in fields_used(model, train_data._dataset):
            logger.info(set_color("fields used", "blue") + f": {line}")
        flops = get_flops(model, dataset, config["device"], logger, construct_transform(config))
        logger.info(set_color("FLOPs", "blue") + f": {flops}")
    if config["torch_compile"]:  # after the FLOPs probe: it would compile a 1-row graph for nothing
        compile_model(model, config["torch_compile_mode"] or "default")
    if not with_trainer:
        return dataset, train_data, valid_data, test_data, model, None
    trainer = get_trainer(config["MODEL_TYPE"], config["model"], model_class)(config, model)
    return dataset, train_data, valid_data, test_data, model, trainer


def init_run_logger(config: Config, stem: str, append: bool = False) -> str:
    """RecBole's ``init_logger`` writing to ``<log_dir>/<model>/<stem>.log``; returns that path.

    RecBole names the file by the second and a hash of the config (two runs in the same
    second share one file), ignores ``log_dir``, and adds no handler once the root logger
    has one (a second run in the process logs into the first run's file). Here each run
    replaces the handlers of the previous one; ``append`` continues an existing file (a
    resumed run).
    """
    import colorlog
    from colorama import init

    init(autoreset=True)
    folder = os.path.join(config["log_dir"] or "log", config["model"])
    check_writable(folder, key="log_dir")
    path = os.path.abspath(os.path.join(folder, f"{stem}.log"))
    state = (config["state"] or "info").lower()
    level = {"debug": logging.DEBUG, "warning": logging.WARNING, "error": logging.ERROR,
             "critical": logging.CRITICAL}.get(state, logging.INFO)
    file_handler = logging.FileHandler(path, mode="a" if append else "w")
    file_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s", "%a %d %b %Y %H:%M:%S"))
    file_handler.addFilter(RemoveColorFilter())
    stream_handler = logging.StreamHandler()
    stream_handler.setFormatter(
        colorlog.ColoredFormatter(
            "%(log_color)s%(asctime)-15s %(levelname)s  %(message)s", "%d %b %H:%M", log_colors=log_colors_config
        )
    )
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if getattr(handler, "recbole_attn_run", False):
            root.removeHandler(handler)
            handler.close()
    for handler in (stream_handler, file_handler):
        handler.setLevel(level)
        handler.recbole_attn_run = True
        root.addHandler(handler)
    root.setLevel(level)
    return path


def _run_name(config: Config, resume: str | None) -> str:
    """The file stem shared by the run's checkpoint and log: new, or that of the run resumed."""
    if resume is None:
        return os.path.splitext(unique_checkpoint_name(config["model"], config["dataset"]))[0]
    try:
        checkpoint = load_checkpoint(str(resume), map_location="cpu")
        model, dataset = checkpoint["config"]["model"], checkpoint["config"]["dataset"]
    except FileNotFoundError as err:
        raise CheckpointError(f"--resume: checkpoint not found: {os.path.abspath(resume)}") from err
    except Exception as err:  # noqa: BLE001 - any failure to read is the same user error
        raise CheckpointError(
            f"--resume: cannot read {resume} ({type(err).__name__}: {err}); expected a checkpoint "
            "written by recbole-attn (<name>-last.pth continues a run exactly)"
        ) from err
    if model.lower() != config["model"].lower() or dataset != config["dataset"]:
        raise CheckpointError(
            f"--resume: {resume} is a checkpoint of --model={model} --dataset={dataset}, not "
            f"--model={config['model']} --dataset={config['dataset']}: resume with the run's own options"
        )
    return os.path.splitext(os.path.basename(checkpoint.get("best_checkpoint", str(resume))))[0]


def as_floats(result: dict | None) -> OrderedDict | None:
    """Metric values as Python floats (numpy 2 prints np.float64(...) otherwise)."""
    return None if result is None else OrderedDict((k, float(v)) for k, v in result.items())


def run_recbole(
    model=None,
    dataset=None,
    config_file_list=None,
    config_dict=None,
    saved: bool = True,
    queue=None,
    resume: str | None = None,
) -> dict:
    """Train and test one model in this process; RecBole's ``run_recbole``.

    ``resume``: a checkpoint of this model and dataset to continue from (see ``run``).

    Returns:
        ``{"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}``.
    """
    config = Config(
        model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict
    )
    result, _ = _train_and_test(config, saved, resume)
    if not config["single_spec"]:
        dist.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


def _train_and_test(config: Config, saved: bool, resume: str | None = None):
    """Train and test the model of ``config``: (RecBole's result dict, the trainer).

    The run's checkpoint and log file share one name (``<model>-<dataset>-<time>-<8 hex>``);
    a resumed run keeps the name of the run it continues and appends to its log.
    """
    stem = _run_name(config, resume)
    if saved and (config["single_spec"] or config["local_rank"] == 0):
        check_writable(config["checkpoint_dir"])  # before any data is loaded
    init_seed(config["seed"], config["reproducibility"])
    log_file = init_run_logger(config, stem, append=resume is not None)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    config["checkpoint_name"] = f"{stem}.pth"

    _, train_data, valid_data, test_data, _, trainer = prepare(config, log=True)
    if resume is not None:
        trainer.resume_checkpoint(resume)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = as_floats(
        trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    )
    best_valid_result = as_floats(best_valid_result)

    logger.info(
        "The running environment of this training is as follows:\n"
        + get_environment(config).draw()
    )
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }
    if hasattr(trainer, "evaluate_initial"):  # a re-ranker (PRM): its initial list, same evaluator
        initial = as_floats(trainer.evaluate_initial(test_data, show_progress=config["show_progress"]))
        result["initial_test_result"] = initial
        logger.info(set_color("initial vs re-ranked (test)", "yellow") + "\n" + side_by_side(initial, test_result))
    checkpoint = os.path.abspath(trainer.saved_model_file) if saved else "none (saved=False)"
    logger.info(set_color("checkpoint", "blue") + f": {checkpoint}  " + set_color("log", "blue") + f": {log_file}")
    return result, trainer


def side_by_side(initial: dict, reranked: dict) -> str:
    """A table of metric, initial list, re-ranked list, difference."""
    rows = [f"{'metric':<14}{'initial':>10}{'re-ranked':>11}{'diff':>9}"]
    for key, value in initial.items():
        rows.append(f"{key:<14}{value:>10.4f}{reranked[key]:>11.4f}{reranked[key] - value:>+9.4f}")
    return "\n".join(rows)


def ranker_config(
    rerank_config: Config,
    ranker: str,
    config_file_list=None,
    config_dict=None,
) -> Config:
    """The config of ``ranker``, the initial ranker of the re-ranking run ``rerank_config``.

    It reads ``config_file_list``, ``config_dict`` and the command line, plus the
    re-ranker's ``load_col`` and ``MAX_ITEM_LIST_LENGTH``, so the two see the same item
    ids and histories.
    """
    model = rerank_config["model"]
    if not getattr(get_model(model), "is_reranker", False):
        raise ConfigError(f"--ranker={ranker} only applies to a re-ranking model (PRM), not --model={model}")
    if getattr(get_model(ranker), "is_reranker", False):
        raise ConfigError(f"--ranker={ranker} is a re-ranker; pass a ranking model such as SASRec")
    if rerank_config["ranker_checkpoint"]:
        raise ConfigError(
            f"both --ranker={ranker} and ranker_checkpoint={rerank_config['ranker_checkpoint']} "
            "were given: pass one (--ranker trains a new ranker, ranker_checkpoint reuses one)"
        )
    ranker_dict = dict(
        config_dict or {},
        load_col=rerank_config["load_col"],
        MAX_ITEM_LIST_LENGTH=rerank_config["MAX_ITEM_LIST_LENGTH"],
    )
    return Config(model=ranker, dataset=rerank_config["dataset"], config_file_list=config_file_list, config_dict=ranker_dict)


def run_with_ranker(
    model: str,
    dataset: str,
    ranker: str,
    config_file_list=None,
    config_dict=None,
    saved: bool = True,
    ranker_config_file_list=None,
) -> dict:
    """Train ``ranker`` on the split, then re-ranker ``model`` (PRM) on its checkpoint.

    Both runs read the same config dict and command line (seed, split, ...) and
    ``config_file_list`` (the ranker reads ``ranker_config_file_list`` instead where
    given); see ``ranker_config``. Returns the re-ranker's result dict, with
    ``ranker_result`` (the ranker's own) and ``ranker_checkpoint`` added.
    """
    rerank_config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    ranker_files = config_file_list if ranker_config_file_list is None else ranker_config_file_list
    ranker_result, ranker_trainer = _train_and_test(
        ranker_config(rerank_config, ranker, ranker_files, config_dict), saved=True
    )
    checkpoint = ranker_trainer.saved_model_file
    config = Config(
        model=model,
        dataset=dataset,
        config_file_list=config_file_list,
        config_dict=dict(config_dict or {}, ranker_checkpoint=checkpoint),
    )
    result, _ = _train_and_test(config, saved)
    result["ranker_result"] = ranker_result
    result["ranker_checkpoint"] = checkpoint
    return result


def run_recboles(rank: int, *args) -> None:
    """Entry point of one spawned process in a distributed run."""
    kwargs = args[-1]
    if not isinstance(kwargs, MutableMapping):
        raise ValueError(f"the last argument must be a dict, got {type(kwargs)}")
    # prepare() divides the usable cores among the nproc processes (torch_threads): with
    # one thread per core each, gloo training on 2 cores ran 28x slower (249 s vs 8.9 s
    # per AttRec ml-100k epoch, 2 processes).
    kwargs["config_dict"] = dict(kwargs.get("config_dict") or {}, local_rank=rank)
    run_recbole(*args[:3], **kwargs)


def run(
    model,
    dataset,
    config_file_list=None,
    config_dict=None,
    saved: bool = True,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str = "5678",
    group_offset: int = 0,
    resume: str | None = None,
) -> dict | None:
    """Train and test a plugin or built-in model, on one process or ``nproc`` of them.

    With ``nproc > 1`` (or ``world_size > 0``) it spawns processes that train through
    torch.distributed: NCCL on GPUs, gloo where CUDA is absent. Returns RecBole's result
    dict (rank 0's in a distributed run).

    ``resume``: continue from a checkpoint of the same model and dataset (one process).
    From ``<name>-last.pth`` (kept while a run trains, and after Ctrl-C or a crash) the
    run ends as an uninterrupted run with the same seed and config would (CPU); from a
    best checkpoint it continues as RecBole's ``resume_checkpoint`` does.
    """
    check_processes(nproc, world_size)
    if nproc == 1 and world_size <= 0:
        return run_recbole(
            model=model,
            dataset=dataset,
            config_file_list=config_file_list,
            config_dict=config_dict,
            saved=saved,
            resume=resume,
        )
    if resume is not None:
        raise ConfigError("--resume continues a run on one process: drop --nproc/--world_size")
    import torch.multiprocessing as mp

    world_size = nproc if world_size == -1 else world_size
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update(
        {"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset}
    )
    kwargs = {"config_dict": config_dict, "queue": queue, "saved": saved}
    mp.spawn(run_recboles, args=(model, dataset, config_file_list, kwargs), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def objective_function(config_dict=None, config_file_list=None, saved: bool = True) -> dict:
    """Objective for ``recbole.trainer.HyperTuning``: train one configuration, quietly."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    init_logger(config)
    logging.basicConfig(level=logging.ERROR)
    _, train_data, valid_data, test_data, _, trainer = prepare(config, log=False)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, verbose=False, saved=saved
    )
    test_result = as_floats(trainer.evaluate(test_data, load_best_model=saved))
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": as_floats(best_valid_result),
        "test_result": test_result,
    }


def load_data_and_model(model_file: str):
    """Rebuild config, model, dataset and splits from a checkpoint of a plugin or built-in model.

    The checkpoint pickles its ``Config``: load only files you wrote or trust.

    Returns:
        ``(config, model, dataset, train_data, valid_data, test_data)``.
    """
    checkpoint = read_checkpoint(model_file, load_checkpoint)
    config = checkpoint["config"]
    config["device"] = torch.device(
        "cuda" if torch.cuda.is_available() and config["use_gpu"] else "cpu"
    )
    config["single_spec"], config["local_rank"] = True, 0
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    getLogger().info(config)
    dataset, train_data, valid_data, test_data, model, _ = prepare(config, log=False, with_trainer=False)
    load_weights(model, checkpoint, model_file)
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data

