"""``recbole-attn benchmark``: every model x seed on one split, one JSON record per run.

Each run trains in its own process (a crash or an out-of-memory kills only that run, and
peak memory is the run's own), through the same runner as ``run_recbole_attn.py``. The
parent appends each run's record to ``<out>/records.jsonl`` as soon as it ends; a failed
run is recorded with ``status: failed`` and its error, and the others go on. ``--resume``
skips the runs recorded as ok and continues an interrupted one from its last finished
epoch to the uninterrupted result (``progress.RunProgress``); a malformed line is skipped
with a warning (``read_records``).
A training run's record holds its learning curve (``curve``: each epoch's train loss,
validation metrics and seconds since training began), its ``epoch_cap`` and whether early
stopping ended it before the cap (``stopped_early``).

With ``--throughput`` each run instead measures training steps through RecBole's data
loader against the same model's forward+backward on the same batches already on the
device; their ratio is the data pipeline's overhead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from recbole_attn.benchmark.environment import child_env, environment, git_sha, repo_path
from recbole_attn.benchmark.progress import RunProgress, run_id
from recbole_attn.benchmark.timing import record_curve, stopped_early, time_epochs

THROUGHPUT_STEPS = 50


def _peak_memory_bytes(device) -> tuple[int, str]:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_max_rss"


def _steps(model, optimizer, batches, device) -> float:
    """Seconds for one optimisation step per batch (batches moved to ``device`` inside)."""
    import torch

    model.train()
    start = time.perf_counter()
    for batch in batches:
        batch = batch.to(device)
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss = sum(loss) if isinstance(loss, tuple) else loss
        loss.backward()
        optimizer.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_throughput(trainer, train_data, device, steps: int = THROUGHPUT_STEPS) -> dict:
    """Training steps through RecBole's loader vs on the same batches pre-loaded on the device."""
    import itertools

    loader_batches = itertools.islice(iter(train_data), steps)
    pipeline_s = _steps(trainer.model, trainer.optimizer, loader_batches, device)
    cached = [b.to(device) for b in itertools.islice(iter(train_data), steps)]
    direct_s = _steps(trainer.model, trainer.optimizer, cached, device)
    n = len(cached)
    return {
        "steps": n,
        "pipeline_s": pipeline_s,
        "direct_s": direct_s,
        "pipeline_steps_per_s": n / pipeline_s,
        "direct_steps_per_s": n / direct_s,
        "overhead_ratio": pipeline_s / direct_s,
    }


def _fit_and_test(config, throughput: bool = False, loaders=None, run: str | None = None,
                  resume: bool = False) -> tuple[dict, object, object]:
    """Train and test the model of ``config`` (or measure its throughput), timing each
    epoch: (the record's measurements, the trainer, the test data). ``loaders``, if given,
    maps RecBole's (train, valid) loaders to the ones ``fit`` reads (a ranker's control).
    ``run``: the id of the run's progress file (``RunProgress``); with ``resume`` an
    interrupted training of the same run goes on from its last epoch.

    A training run's measurements hold its learning curve (``curve``: per epoch the train
    loss, the validation metrics and the seconds since training began, see
    ``record_curve``), the epoch cap and whether early stopping ended it before the cap
    (``stopped_early``; False: the run was not converged by the early-stopping rule)."""
    import torch
    from recbole.utils import init_seed

    from recbole_attn.quick_start import as_floats, prepare

    init_seed(config["seed"], config["reproducibility"])
    _, train_data, valid_data, test_data, net, trainer = prepare(config, log=False)
    device = config["device"]
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    out: dict = {
        "config": json.loads(json.dumps(dict(config.final_config_dict), default=str)),
        "parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
    }
    start = time.perf_counter()
    if throughput:
        out["throughput"] = measure_throughput(trainer, train_data, device)
    else:
        if loaders is not None:
            train_data, valid_data = loaders(train_data, valid_data)
        progress = RunProgress(config["checkpoint_dir"], run, out["config"]) if run else None
        saved = progress.load() if progress and resume else None
        if progress and not saved:
            progress.discard()  # a stale interrupted run of these options (not --resume)
        curve_before, times_before = progress.resume(trainer, saved) if saved else ([], [])
        prior_s = saved["run_time_s"] if saved else 0.0
        epoch_times = time_epochs(trainer, times_before)
        curve = record_curve(trainer, curve_before)
        if progress:
            progress.track(trainer, curve, epoch_times, prior_s)
        best_valid_score, best_valid = trainer.fit(
            train_data, valid_data, saved=True, show_progress=False
        )
        test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
        out.update(
            epochs_trained=len(epoch_times),
            epoch_cap=int(config["epochs"]),
            stopped_early=stopped_early(trainer),
            curve=curve,
            median_epoch_s=statistics.median(epoch_times) if epoch_times else None,
            best_valid_score=float(best_valid_score),
            best_valid=as_floats(best_valid),
            test=as_floats(test),
        )
        if saved:
            out.update(resumed_at_epochs=progress.resumed_at, prior_run_time_s=prior_s)
        if progress:
            progress.discard()
    out["run_time_s"] = time.perf_counter() - start + out.get("prior_run_time_s", 0.0)
    return out, trainer, test_data


RANKER_RUN_KEYS = ("parameters", "epochs_trained", "median_epoch_s", "best_valid", "test", "epoch_cap",
                   "stopped_early", "curve")
CONTROL = "train + validation"  # how the control ranker is named in its run and its table row


def _ranker_run(ranker_config, rerank_config, control: bool = False) -> dict:
    """Train the initial ranker of a re-ranking run, or reuse the one an earlier run in the
    same ``checkpoint_dir`` trained with the same model, data, seed and options.

    Options only the re-ranker defines (in its model YAML, e.g. PRM's
    ``use_rank_embedding``) reach the ranker's config through the command line but cannot
    change it, so they are left out of the comparison: the variants of a re-ranker are
    trained on one and the same ranker. Returns the ranker's checkpoint and measurements.

    With ``control``, the ranker is instead retrained on its training rows plus the
    validation-point rows the re-ranker learns from, early-stopped on the re-ranker's
    held-out users (``train_and_validation_loaders`` with the re-ranker's
    ``prm_holdout_ratio``); its run says so in ``trained_on``.
    """
    own = set(ranker_config.internal_config_dict) | set(ranker_config.file_config_dict)
    own |= set(ranker_config.variable_config_dict)
    rerank_only = set(getattr(rerank_config, "plugin_defaults", {})) - own
    options = {k: v for k, v in ranker_config.final_config_dict.items() if k not in rerank_only | {"checkpoint_dir"}}
    loaders = None
    if control:
        from recbole_attn.data.rerank import train_and_validation_loaders

        ratio = rerank_config["prm_holdout_ratio"]
        options["control"] = {"trained_on": CONTROL, "prm_holdout_ratio": ratio}
        loaders = lambda train, valid: train_and_validation_loaders(ranker_config, train, valid, ratio)  # noqa: E731
    digest = hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]
    stem = Path(ranker_config["checkpoint_dir"]) / "rankers" / f"{ranker_config['model']}-{digest}"
    meta = stem.with_suffix(".json")
    if meta.is_file():
        return json.loads(meta.read_text())
    measured, trainer, _ = _fit_and_test(ranker_config, loaders=loaders, run=stem.name, resume=True)
    stem.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(trainer.saved_model_file, stem.with_suffix(".pth"))
    run = {
        "model": ranker_config["model"],
        "checkpoint": str(stem.with_suffix(".pth")),
        "options_sha1": digest,
        **({"trained_on": CONTROL} if control else {}),
        **{k: measured[k] for k in RANKER_RUN_KEYS},
    }
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(run))
    tmp.replace(meta)  # written last: a crash leaves no half entry
    return run


def _rerank_metrics(rerank_config, ranker_config) -> dict:
    """``metrics`` and ``topk`` that measure a ranker as its re-ranker's evaluator does,
    keeping the ranker's own ``valid_metric`` computable (its early stopping)."""
    name, _, k = str(ranker_config["valid_metric"]).partition("@")
    metrics = list(rerank_config["metrics"])
    if name.lower() not in {m.lower() for m in metrics}:
        metrics.append(name)
    topk = sorted(set(rerank_config["topk"]) | ({int(k)} if k else set()))
    return {"metrics": metrics, "topk": topk}


def train_one(
    model: str,
    dataset: str,
    seed: int,
    config_files: list[str] | None = None,
    config_dict: dict | None = None,
    throughput: bool = False,
    ranker: str | None = None,
    ranker_config_files: list[str] | None = None,
    ranker_control: bool = False,
    run: str | None = None,
    resume: bool = False,
) -> dict:
    """Train and test one model in this process; the measurements of a record.

    ``--key=value`` overrides are read from ``sys.argv`` by RecBole's Config, as in a run.
    With ``ranker`` (a re-ranker such as PRM), the ranker is trained first (or reused, see
    ``_ranker_run``) on ``ranker_config_files`` (default: ``config_files``), and the record
    also holds the ranker's run and the initial list's test metrics (``initial_test``,
    measured by the re-ranker's evaluator). With ``ranker_control`` the record also holds
    ``control_run``: the same ranker retrained on train + the re-ranker's validation-point
    rows (``_ranker_run(control=True)``), tested on the re-ranker's metrics and cut-offs.
    ``run`` and ``resume``: see ``_fit_and_test`` (an interrupted ranker always goes on).
    """
    from recbole.utils import init_logger

    from recbole_attn.config import Config
    from recbole_attn.quick_start import as_floats, ranker_config

    config_dict = {**(config_dict or {}), "seed": seed}
    config = Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=config_dict)
    init_logger(config)
    out: dict = {}
    if ranker:
        files = config_files if ranker_config_files is None else ranker_config_files
        first = ranker_config(config, ranker, files, config_dict)
        out["ranker_run"] = _ranker_run(first, config)
        if ranker_control:
            out["control_run"] = _ranker_run(
                ranker_config(config, ranker, files, {**config_dict, **_rerank_metrics(config, first)}), config,
                control=True)
        config_dict["ranker_checkpoint"] = out["ranker_run"]["checkpoint"]
        config = Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=config_dict)
    measured, trainer, test_data = _fit_and_test(config, throughput, run=run, resume=resume)
    out.update(measured)
    if ranker and not throughput:
        out["initial_test"] = as_floats(trainer.evaluate_initial(test_data, show_progress=False))
    out["peak_memory_bytes"], out["peak_memory_kind"] = _peak_memory_bytes(config["device"])
    out["device_type"] = str(config["device"])
    return out


def read_records(path: Path) -> list[dict]:
    """The records of a ``records.jsonl``; a malformed line (a killed run's truncated last
    line, say) is skipped with a warning on stderr naming the file and line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                record, reason = None, f"not JSON: {err.msg} at column {err.colno}"
            else:
                reason = f"a JSON {type(record).__name__}, not an object"
            if not isinstance(record, dict):
                print(f"recbole-attn: warning: {path}:{number}: skipped a malformed record ({reason})", file=sys.stderr)
                continue
            records.append(record)
    return records


def append_record(path: Path, record: dict) -> None:
    """Append one record as a line; a truncated last line left by a killed run is ended
    first, so the new record never shares its line."""
    with open(path, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(record) + "\n").encode("utf-8"))


def _absolute_data_path(override: str) -> str:
    """``--data_path=rel`` made absolute from the current folder; other overrides as they are."""
    key, _, value = override.partition("=")
    if key == "--data_path" and value and not Path(value).expanduser().is_absolute():
        return f"--data_path={Path(value).resolve()}"
    return override


def run_benchmark(
    models: list[str],
    dataset: str,
    seeds: list[int],
    out_dir: Path,
    config_files: list[str] | None = None,
    overrides: list[str] | None = None,
    throughput: bool = False,
    label: str | None = None,
    resume: bool = False,
    show_progress: bool = True,
    ranker: str | None = None,
    ranker_config_files: list[str] | None = None,
    ranker_control: bool = False,
) -> list[dict]:
    """Train every model x seed in its own process; append one record per run to records.jsonl.

    ``overrides`` are ``--key=value`` strings, given to every run's command line (a relative
    ``--data_path`` is read from the current folder, and recorded as given, so the record's
    command works from the same folder on another machine). With
    ``resume``, runs that already have a successful record with the same options are skipped
    (not one marked ``superseded``: its model changed since).
    ``ranker``: the models are re-rankers (PRM) of this ranker's lists, see ``train_one``;
    ``ranker_control``: their records also hold the ranker retrained on train + validation.
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    records_file = out_dir / "records.jsonl"
    records = []
    kind = "throughput" if throughput else "train"
    shown_files = [repo_path(f) for f in config_files] if config_files else config_files
    shown_ranker_files = [repo_path(f) for f in ranker_config_files] if ranker_config_files else ranker_config_files

    def key(model: str, seed: int, record: dict | None = None) -> tuple:
        r = record or {"kind": kind, "model": model, "label": label, "dataset": dataset, "seed": seed,
                       "config_files": shown_files, "overrides": overrides or [],
                       "ranker": ranker, "ranker_config_files": shown_ranker_files,
                       "ranker_control": ranker_control or None}
        return tuple(json.dumps(r.get(k)) for k in ("kind", "model", "label", "dataset", "seed", "config_files",
                                                    "overrides", "ranker", "ranker_config_files", "ranker_control"))

    child_overrides = [_absolute_data_path(o) for o in overrides or []]  # the child runs in out_dir
    done = set()
    if resume and records_file.is_file():
        # a superseded record ran a model that a later fix changed: run it again
        done = {key("", 0, r) for r in read_records(records_file) if r.get("status") == "ok" and not r.get("superseded")}
    runs = [(m, s) for m in models for s in seeds if key(m, s) not in done]
    bar = tqdm(runs, desc="benchmark", disable=not show_progress, ncols=100)
    for model, seed in bar:
        bar.set_postfix_str(f"{model} seed={seed}")
        job = {
            "model": model,
            "dataset": dataset,
            "seed": seed,
            "config_files": config_files,
            "config_dict": {"checkpoint_dir": str(out_dir / "checkpoints")},
            "throughput": throughput,
            "ranker": ranker,
            "ranker_config_files": ranker_config_files,
            "ranker_control": ranker_control,
            "run": run_id(key(model, seed)),
            "resume": resume,
        }
        started = time.perf_counter()
        code_at_start = git_sha()
        proc = subprocess.run(
            [sys.executable, "-m", "recbole_attn.benchmark.runner", "--child", json.dumps(job), *child_overrides],
            capture_output=True,
            text=True,
            cwd=out_dir,
            env=child_env(),
        )
        record = {
            "kind": kind,
            "model": model,
            "label": label,
            "dataset": dataset,
            "seed": seed,
            "config_files": shown_files,
            "overrides": overrides or [],
        }
        if ranker:
            record.update(ranker=ranker, ranker_config_files=shown_ranker_files)
        if ranker_control:
            record["ranker_control"] = True
        result_line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode == 0 and result_line.startswith("{"):
            measured = json.loads(result_line)
            record.update(environment(measured["device_type"]), status="ok", **measured)
        else:
            record.update(environment(), status="failed", error=proc.stderr.strip()[-4000:])
        record["wall_time_s"] = time.perf_counter() - started + record.get("prior_run_time_s", 0.0)
        if (record["git_sha"], record["git_dirty"]) != code_at_start:
            # The checkout moved while the run went on: the code that ran is the start's, and
            # a later edit may have reached it through a late import, so the record counts as dirty.
            record.update(git_sha=code_at_start[0], git_dirty=True, git_changed_during_run=True)
        append_record(records_file, record)
        records.append(record)
    return records


def benchmark_main(argv: list[str]) -> int:
    from recbole_attn.cli import parse_overrides

    p = argparse.ArgumentParser(
        prog="recbole-attn benchmark",
        description="Train models x seeds on one split and record each run.",
        epilog="Any other key=value or --key=value overrides that config key for every run.",
    )
    p.add_argument("--models", required=True, help="comma-separated model names")
    p.add_argument("--dataset", required=True)
    p.add_argument("--seeds", default="2020", help="comma-separated seeds")
    p.add_argument("--config_files", default=None, help="space-separated YAML files")
    p.add_argument("--out", default="benchmark-out", help="folder for records.jsonl")
    p.add_argument("--label", default=None, help="row name for a variant of one model (e.g. NOVABERT-add with fusion_type=add)")
    p.add_argument("--throughput", action="store_true", help="measure the data pipeline's overhead")
    p.add_argument("--ranker", default=None,
                   help="re-rankers (PRM) only: train this ranker first (once per seed and options), then re-rank its lists")
    p.add_argument("--ranker_config_files", default=None,
                   help="space-separated YAML files of the ranker (default: --config_files)")
    p.add_argument("--ranker_control", action="store_true",
                   help="re-rankers only: also retrain the ranker on train + the validation-point rows the "
                        "re-ranker learns from (the control row '<ranker> (train + validation)')")
    p.add_argument("--resume", action="store_true", help="skip runs already recorded as ok in --out; continue an interrupted run from its last epoch")
    p.add_argument("--no-progress", action="store_true")
    args, extra = p.parse_known_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.label and len(models) != 1:
        p.error(f"--label names the runs of one model; got --models {args.models}")
    if args.ranker_config_files and not args.ranker:
        p.error("--ranker_config_files needs --ranker")
    if args.ranker_control and not args.ranker:
        p.error("--ranker_control needs --ranker (it retrains that ranker on train + validation)")
    if args.ranker:
        from recbole_attn.config import get_model

        not_rerankers = [m for m in models if not getattr(get_model(m), "is_reranker", False)]
        if not_rerankers:
            p.error(f"--ranker={args.ranker} applies to re-ranking models (PRM); not to {','.join(not_rerankers)}")
    records = run_benchmark(
        models=models,
        dataset=args.dataset,
        seeds=[int(s) for s in args.seeds.split(",")],
        out_dir=Path(args.out).resolve(),
        config_files=[str(Path(f).resolve()) for f in args.config_files.split()] if args.config_files else None,
        overrides=parse_overrides(extra),
        throughput=args.throughput,
        label=args.label,
        resume=args.resume,
        show_progress=not args.no_progress,
        ranker=args.ranker,
        ranker_config_files=[str(Path(f).resolve()) for f in args.ranker_config_files.split()]
        if args.ranker_config_files else None,
        ranker_control=args.ranker_control,
    )
    failed = [r for r in records if r["status"] != "ok"]
    print(f"{len(records)} runs recorded in {Path(args.out).resolve() / 'records.jsonl'}, {len(failed)} failed")
    for r in failed:
        print(f"  failed: {r['model']} seed={r['seed']}: {r['error'].splitlines()[-1] if r['error'] else ''}")
    return 1 if failed else 0


def _child(job: dict, overrides: list[str]) -> int:
    sys.argv = sys.argv[:1] + overrides  # RecBole's Config reads --key=value from argv
    result = train_one(
        job["model"],
        job["dataset"],
        job["seed"],
        job.get("config_files"),
        job.get("config_dict"),
        job.get("throughput", False),
        job.get("ranker"),
        job.get("ranker_config_files"),
        job.get("ranker_control", False),
        job.get("run"),
        job.get("resume", False),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        sys.exit(_child(json.loads(sys.argv[2]), sys.argv[3:]))
    sys.exit(benchmark_main(sys.argv[1:]))
