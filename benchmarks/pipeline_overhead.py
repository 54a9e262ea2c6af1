"""Benchmark: a model's training epoch through RecBole's own pipeline vs through our runner.

    python benchmarks/pipeline_overhead.py --model SASRec --dataset ml-100k --seed 2020

Runs two fresh processes one after the other on this machine, same seed and config:

- ``recbole``: RecBole 1.2.1's own Config, data preparation, model lookup and Trainer,
  exactly as its ``run_recbole`` calls them, with only the numpy aliases it needs to
  start on numpy 2 (``recbole_attn.compat.add_numpy_aliases``) and without the FLOPs
  count (skipped in both, so both consume the same random numbers);
- ``ours``: ``recbole_attn``'s Config, runner and trainer (all compat fixes on).

Each trains ``--epochs`` epochs and validates after each. The record (JSON, appended under
``benchmarks/records/``) holds both runs' train-epoch times, losses and valid metrics,
their ratio and match checks, the git SHA, package versions, CPU, seed and config; then
``docs/benchmarks.md`` is regenerated from all records. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RECORDS = REPO / "benchmarks" / "records"
DOC = REPO / "docs" / "benchmarks.md"


def _load_by_path(relpath: str):
    """A module of recbole_attn loaded from its file, without importing the package
    (importing ``recbole_attn`` would apply every compat fix to the baseline)."""
    spec = importlib.util.spec_from_file_location(Path(relpath).stem, REPO / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train_child(pipeline: str, model: str, dataset: str, config_dict: dict) -> dict:
    """Train in this process through one pipeline; returns timings, losses and metrics."""
    timing = _load_by_path("recbole_attn/benchmark/timing.py")  # imports only torch
    if pipeline == "recbole":
        _load_by_path("recbole_attn/compat.py").add_numpy_aliases()  # imports numpy, torch
        from recbole.config import Config
        from recbole.utils import get_model, get_trainer

        def build(config):
            dataset_ = create_dataset(config)
            train, valid, _ = data_preparation(config, dataset_)
            init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
            net = get_model(config["model"])(config, train._dataset).to(config["device"])
            trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
            return train, valid, net, trainer

    else:
        import recbole_attn  # noqa: F401
        from recbole_attn.config import Config
        from recbole_attn.quick_start import prepare

        def build(config):
            _, train, valid, _, net, trainer = prepare(config, log=False)
            return train, valid, net, trainer

    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_logger, init_seed

    config = Config(model=model, dataset=dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    train, valid, net, trainer = build(config)

    epoch_times = timing.time_epochs(trainer)
    _, valid_result = trainer.fit(train, valid, saved=False, show_progress=False)
    return {
        "pipeline": pipeline,
        "anomaly_mode": torch.is_anomaly_enabled(),
        "epoch_times_s": epoch_times,
        "train_losses": [float(v) for v in trainer.train_loss_dict.values()],
        "valid_result": {k: float(v) for k, v in valid_result.items()},
        "parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
    }


def _sig(x: float, digits: int) -> str:
    return f"{x:.{digits - 1}e}"


def measure(model: str, dataset: str, seed: int, epochs: int, extra: dict) -> dict:
    """Both pipelines in fresh processes, one after the other; the record."""
    from recbole_attn.benchmark.environment import child_env, environment

    config_dict = {
        "seed": seed,
        "epochs": epochs,
        "show_progress": False,
        "state": "WARNING",
        "checkpoint_dir": str(REPO / "benchmarks" / "scratch"),
        **extra,
    }
    started = time.perf_counter()
    runs = {}
    for pipeline in ("recbole", "ours"):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", pipeline, "--model", model, "--dataset", dataset,
             "--config", json.dumps(config_dict)],
            capture_output=True, text=True, cwd=REPO / "benchmarks",
            env=child_env(),
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{pipeline} run failed:\n{proc.stderr[-4000:]}")
        runs[pipeline] = json.loads(proc.stdout.strip().splitlines()[-1])
    rb, ours = runs["recbole"], runs["ours"]
    return {
        "benchmark": "pipeline_overhead",
        **environment("cpu"),
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "config": config_dict,
        "runs": runs,
        "epoch_time_ratio": sum(rb["epoch_times_s"]) / sum(ours["epoch_times_s"]),
        "loss_match_4_significant": [_sig(a, 4) for a in rb["train_losses"]]
        == [_sig(b, 4) for b in ours["train_losses"]],
        "valid_match_3_decimals": {k: round(v, 3) for k, v in rb["valid_result"].items()}
        == {k: round(v, 3) for k, v in ours["valid_result"].items()},
        "wall_time_s": time.perf_counter() - started,
    }


def render() -> str:
    """Regenerate docs/benchmarks.md (and its plots) from every record under benchmarks/records."""
    from recbole_attn.benchmark.report import render as render_report

    return render_report(RECORDS, DOC, DOC.parent / "img")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="SASRec")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--config", default="{}", help="JSON dict of extra config keys")
    p.add_argument("--render", action="store_true", help="only regenerate docs/benchmarks.md")
    p.add_argument("--child", choices=["recbole", "ours"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    extra = json.loads(args.config)
    if args.child:
        sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from argv
        print(json.dumps(_train_child(args.child, args.model, args.dataset, extra)))
        return 0
    if not args.render:
        # RecBole 1.2.1 alone raises for a sequential CE model unless sampling is off.
        extra.setdefault("train_neg_sample_args", None)
        record = measure(args.model, args.dataset, args.seed, args.epochs, extra)
        RECORDS.mkdir(parents=True, exist_ok=True)
        name = f"pipeline_overhead-{record['model']}-{record['dataset']}-{record['date'].replace(':', '')}.json"
        (RECORDS / name).write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps({k: record[k] for k in ("epoch_time_ratio", "loss_match_4_significant", "valid_match_3_decimals")}))
    print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
