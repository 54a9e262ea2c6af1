"""Benchmark: a model's training steps through our runner vs a minimal PyTorch loop.

    python benchmarks/floor.py AttnDIN ml-100k --batches 10 --rounds 3

In one process, on the same model, starting weights, optimiser state, random states and
batches, times ``--rounds`` passes of each kind, alternately (ABBA order, so drift and a shared
CPU's load fall on both alike):

- ``runner``: our trainer's ``_train_epoch`` (RecBole's, with this project's trainer
  mixins) over the first ``--batches`` batches of the training loader (its collation,
  negative sampling and transforms included; for a re-ranker, PRM, the loader of the
  validation-point lists its trainer fits on);
- ``loop``: the floor, a plain loop over the same batches collected beforehand:
  ``zero_grad``, ``calculate_loss``, ``backward``, (``clip_grad_norm_`` where the config
  sets it), ``step``;
- ``loop_loader``: the plain loop, but over the loader's batches as they come (the data
  pipeline's cost without the trainer's);
- ``loader``: the loader alone over the same batches (no model), to tell the data
  pipeline's share of ``runner - loop`` from the trainer's.

After one untimed warm-up step of each, and before every timed pass, the weights, the optimiser and the torch / numpy / random /
loader RNG states are restored, so each pass computes the same losses (``loss_match``).
The record (JSON, ``--out``) holds every pass's time, the medians, the ratio ``runner / loop``
(``ratio``: the median over rounds of the ratio within a round; ``ratio_of_medians``), the
git SHA, versions, CPU, seed and config. Default presets: ``cpu-ctr-<dataset>.yaml`` for
the target-item models, ``cpu-<dataset>.yaml`` for the others. ``--profile KIND`` prints
a cProfile of one pass of that kind instead of timing. PRM needs a trained ranker:
``--config '{"ranker_checkpoint": "<ckpt>.pth", "checkpoint_dir": "<its folder>"}'`` (a
ranker trained with the same preset: same history length and item ids). Tables: ``docs/speed.md``
(``recbole_attn.benchmark.speed_report``). Not a test.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TARGET_ITEM_MODELS = {"AttnDIN", "AttnDIEN", "BST", "ATRank", "DIN", "DIEN"}


class FirstBatches:
    """The first ``n`` batches of a loader, iterated afresh each time (a loader for ``_train_epoch``)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n
        self.shuffle = getattr(loader, "shuffle", False)

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self) -> int:
        return min(self.n, len(self.loader))


def paired_ratio(times: dict[str, list[float]]) -> float:
    """Median over rounds of runner / loop within the round: the two passes of a round run
    seconds apart, so a shared machine's load swings (several-fold here) cancel better
    than in the ratio of the medians."""
    return statistics.median(r / l for r, l in zip(times["runner"], times["loop"]))


def default_config_files(model: str, dataset: str) -> list[str]:
    kind = "cpu-ctr" if model in TARGET_ITEM_MODELS else "cpu"
    path = REPO / "benchmarks" / "presets" / f"{kind}-{dataset}.yaml"
    return [str(path)] if path.is_file() else []


def measure(model_name: str, dataset: str, config_files: list[str], overrides: dict,
            batches: int, rounds: int, profile: str | None = None) -> dict:
    import torch
    from recbole.utils import init_seed

    import recbole_attn  # noqa: F401
    from recbole_attn.benchmark.environment import environment, repo_path
    from recbole_attn.config import Config
    from recbole_attn.quick_start import prepare
    from recbole_attn.trainer import _clip_args, _rng_state, _set_rng_state

    env = environment(overrides.get("device", "cpu"))  # before the runs: the code they ran on
    config = Config(model=model_name, dataset=dataset, config_file_list=config_files or None,
                    config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    _, train_data, valid_data, _, model, trainer = prepare(config, log=False)
    if getattr(model, "is_reranker", False):  # PRM trains on the validation-point lists (PRMTrainer.fit)
        from recbole_attn.data.rerank import validation_point_loaders

        train_data, _ = validation_point_loaders(config, valid_data, config["prm_holdout_ratio"])
    device = config["device"]
    loader = FirstBatches(train_data, batches)
    weights = copy.deepcopy(model.state_dict())
    optimiser = copy.deepcopy(trainer.optimizer.state_dict())
    rng = _rng_state(train_data)
    clip = _clip_args(config["clip_grad_norm"])

    def reset() -> None:
        model.load_state_dict(weights)
        trainer.optimizer.load_state_dict(optimiser)
        _set_rng_state(rng, train_data)

    reset()
    cached = [b.to(device) for b in loader]

    def sync() -> None:
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    def run_runner() -> float:
        loss = trainer._train_epoch(loader, 0, show_progress=False)
        return float(sum(loss) if isinstance(loss, tuple) else loss)

    def run_loop(batches=cached) -> float:
        model.train()
        total = torch.zeros((), device=device)
        for batch in batches:
            batch = batch.to(device)
            trainer.optimizer.zero_grad()
            loss = model.calculate_loss(batch)
            loss = sum(loss) if isinstance(loss, tuple) else loss
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), **clip)
            trainer.optimizer.step()
            total += loss.detach()
        return float(total)

    def run_loader() -> float:
        for batch in loader:
            batch.to(device)
        return float("nan")

    def run_loop_loader() -> float:
        return run_loop(loader)

    passes = {"runner": run_runner, "loop": run_loop, "loop_loader": run_loop_loader, "loader": run_loader}
    if profile:
        import cProfile
        import pstats

        reset()
        prof = cProfile.Profile()
        prof.runcall(passes[profile])
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return {}
    times: dict[str, list[float]] = {k: [] for k in passes}
    losses: dict[str, list[float]] = {k: [] for k in passes}
    orders = [tuple(passes), tuple(reversed(passes))]
    reset()  # warm-up (first-call allocations, lazy initialisation), untimed
    trainer._train_epoch(FirstBatches(train_data, 1), 0, show_progress=False)
    run_loop(cached[:1])
    for r in range(rounds):
        for name in orders[r % 2]:
            reset()
            sync()
            start = time.perf_counter()
            loss = passes[name]()
            sync()
            times[name].append(time.perf_counter() - start)
            losses[name].append(loss)
    median = {k: statistics.median(v) for k, v in times.items()}
    loop_loss = losses["loop"][0]
    computed = [x for k in ("runner", "loop", "loop_loader") for x in losses[k]]
    return {
        "benchmark": "floor",
        **env,
        "model": model_name,
        "dataset": dataset,
        "seed": int(config["seed"]),
        "config_files": [repo_path(f) for f in config_files],
        "overrides": overrides,
        "config": {k: config[k] for k in ("train_batch_size", "MAX_ITEM_LIST_LENGTH", "loss_type",
                                          "train_neg_sample_args", "learner", "learning_rate",
                                          "clip_grad_norm", "torch_compile") if k in config},
        "batches": len(cached),
        "rows": sum(len(b) for b in cached),
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "times_s": times,
        "median_s": median,
        "ratio": paired_ratio(times),
        "ratio_of_medians": median["runner"] / median["loop"],
        "loader_share": median["loader"] / median["loop"],
        "losses": {k: v for k, v in losses.items() if k != "loader"},
        "loss_match": all(abs(x - loop_loss) <= 1e-6 * max(1.0, abs(loop_loss)) for x in computed),
        "cpu_note": "timed alternately in one process on a CPU shared with other jobs",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("dataset")
    p.add_argument("--batches", type=int, default=10, help="training batches per pass [>=1]")
    p.add_argument("--rounds", type=int, default=3, help="timed passes of each kind [>=1]")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--config_files", default=None, help="space-separated YAML files (default: the CPU preset)")
    p.add_argument("--config", default="{}", help="JSON dict of extra config keys")
    p.add_argument("--profile", choices=["runner", "loop", "loop_loader", "loader"], help="cProfile one pass instead")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "records" / "speed" / "floor"))
    args = p.parse_args(argv)
    if args.batches < 1 or args.rounds < 1:
        p.error("--batches and --rounds must be >= 1")
    files = args.config_files.split() if args.config_files is not None else default_config_files(args.model, args.dataset)
    overrides = {"seed": args.seed, "torch_threads": args.threads, "show_progress": False, "state": "WARNING",
                 "device": args.device, "use_gpu": args.device != "cpu",
                 "checkpoint_dir": os.path.join(os.environ.get("TMPDIR", "/tmp"), "floor-ckpt"),
                 **json.loads(args.config)}
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from argv
    record = measure(args.model, args.dataset, files, overrides, args.batches, args.rounds, args.profile)
    if not record:
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"floor-{args.model}-{args.dataset}-{record['git_sha'][:8]}-{int(time.time())}.json"
    (out / name).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("model", "median_s", "ratio", "loader_share", "loss_match")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
