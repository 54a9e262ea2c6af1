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
ranker trained with the same preset: same history length and item ids).

``--compile`` measures ``torch.compile`` instead (record ``benchmark: compile``): the same
model's ``calculate_loss`` eager and compiled (``torch.compile`` of the bound method, swapped
on the instance between passes), through the runner and through the plain loop, alternately
(ABBA) over the same batches, each pass from the same restored state. Every kind first runs
one full untimed pass (the compiled ones twice), so compilation and any recompilation (a
data-dependent size, such as AttnDIN's count of real history positions, differs between
batches: the first new size recompiles with a dynamic dimension) fall before the timing; the record counts the graphs compiled during the
warm-up and during the timing (``compiles``; the timing must add none), and holds every
pass's seconds and summed loss, ``ratio`` (median over rounds of compiled / eager runner
seconds within a round), ``loop_ratio`` and the largest loss difference. With
``--fallback_random``, compiled dropout draws eager's masks (inductor's ``fallback_random``). Tables:
``docs/speed.md`` (``recbole_attn.benchmark.speed_report``). Not a test.
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
OUT = {kind: REPO / "benchmarks" / "records" / "speed" / kind for kind in ("floor", "compile")}  # default --out
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


def paired_ratio(times: dict[str, list[float]], num: str = "runner", den: str = "loop") -> float:
    """Median over rounds of ``num`` / ``den`` within the round: the passes of a round run
    seconds apart, so a shared machine's load swings (several-fold here) cancel better
    than in the ratio of the medians."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def default_config_files(model: str, dataset: str) -> list[str]:
    kind = "cpu-ctr" if model in TARGET_ITEM_MODELS else "cpu"
    path = REPO / "benchmarks" / "presets" / f"{kind}-{dataset}.yaml"
    return [str(path)] if path.is_file() else []


class Bench:
    """One model, trainer and batch list set up for timed passes; ``reset`` restores the
    weights, the optimiser and every RNG state (loader's included) the passes start from."""

    def __init__(self, model_name: str, dataset: str, config_files: list[str], overrides: dict, batches: int):
        import torch
        from recbole.utils import init_seed

        import recbole_attn  # noqa: F401
        from recbole_attn.benchmark.environment import environment
        from recbole_attn.config import Config
        from recbole_attn.quick_start import prepare
        from recbole_attn.recipe import _clip_args
        from recbole_attn.trainer import _rng_state

        self.env = environment(overrides.get("device", "cpu"))  # before the runs: the code they ran on
        self.config = config = Config(model=model_name, dataset=dataset, config_file_list=config_files or None,
                                      config_dict=overrides)
        init_seed(config["seed"], config["reproducibility"])
        _, train_data, valid_data, _, self.model, self.trainer = prepare(config, log=False)
        if getattr(self.model, "is_reranker", False):  # PRM trains on the validation-point lists (PRMTrainer.fit)
            from recbole_attn.data.rerank import validation_point_loaders

            train_data, _ = validation_point_loaders(config, valid_data, config["prm_holdout_ratio"])
        self.train_data, self.device = train_data, config["device"]
        self.loader = FirstBatches(train_data, batches)
        self.weights = copy.deepcopy(self.model.state_dict())
        self.optimiser = copy.deepcopy(self.trainer.optimizer.state_dict())
        self.rng = _rng_state(train_data)
        self.clip = _clip_args(config["clip_grad_norm"])
        self.reset()
        self.cached = [b.to(self.device) for b in self.loader]
        self.torch = torch

    def reset(self) -> None:
        from recbole_attn.trainer import _set_rng_state

        self.model.load_state_dict(self.weights)
        self.trainer.optimizer.load_state_dict(self.optimiser)
        _set_rng_state(self.rng, self.train_data)

    def sync(self) -> None:
        if str(self.device).startswith("cuda"):
            self.torch.cuda.synchronize()

    def run_runner(self, loader=None) -> float:
        loss = self.trainer._train_epoch(loader or self.loader, 0, show_progress=False)
        return float(sum(loss) if isinstance(loss, tuple) else loss)

    def run_loop(self, batches=None) -> float:
        torch, model, optimizer = self.torch, self.model, self.trainer.optimizer
        model.train()
        total = torch.zeros((), device=self.device)
        for batch in self.cached if batches is None else batches:
            batch = batch.to(self.device)
            optimizer.zero_grad()
            loss = model.calculate_loss(batch)
            loss = sum(loss) if isinstance(loss, tuple) else loss
            loss.backward()
            if self.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), **self.clip)
            optimizer.step()
            total += loss.detach()
        return float(total)

    def timed(self, fn) -> tuple[float, float]:
        """(seconds, summed loss) of one pass of ``fn`` from the restored state."""
        self.reset()
        self.sync()
        start = time.perf_counter()
        loss = fn()
        self.sync()
        return time.perf_counter() - start, loss

    def header(self, benchmark: str, model_name: str, dataset: str, config_files: list[str], overrides: dict,
               rounds: int) -> dict:
        from recbole_attn.benchmark.environment import repo_path

        config = self.config
        return {
            "benchmark": benchmark,
            **self.env,
            "model": model_name,
            "dataset": dataset,
            "seed": int(config["seed"]),
            "config_files": [repo_path(f) for f in config_files],
            "overrides": overrides,
            "config": {k: config[k] for k in ("train_batch_size", "MAX_ITEM_LIST_LENGTH", "loss_type",
                                              "train_neg_sample_args", "learner", "learning_rate",
                                              "clip_grad_norm") if k in config},
            "batches": len(self.cached),
            "rows": sum(len(b) for b in self.cached),
            "rounds": rounds,
            "threads": self.torch.get_num_threads(),
        }


def measure(model_name: str, dataset: str, config_files: list[str], overrides: dict,
            batches: int, rounds: int, profile: str | None = None) -> dict:
    bench = Bench(model_name, dataset, config_files, overrides, batches)
    trainer, train_data, loader, cached = bench.trainer, bench.train_data, bench.loader, bench.cached
    device, run_runner, run_loop = bench.device, bench.run_runner, bench.run_loop

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

        bench.reset()
        prof = cProfile.Profile()
        prof.runcall(passes[profile])
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return {}
    times: dict[str, list[float]] = {k: [] for k in passes}
    losses: dict[str, list[float]] = {k: [] for k in passes}
    orders = [tuple(passes), tuple(reversed(passes))]
    bench.reset()  # warm-up (first-call allocations, lazy initialisation), untimed
    trainer._train_epoch(FirstBatches(train_data, 1), 0, show_progress=False)
    run_loop(cached[:1])
    for r in range(rounds):
        for name in orders[r % 2]:
            seconds, loss = bench.timed(passes[name])
            times[name].append(seconds)
            losses[name].append(loss)
    median = {k: statistics.median(v) for k, v in times.items()}
    loop_loss = losses["loop"][0]
    computed = [x for k in ("runner", "loop", "loop_loader") for x in losses[k]]
    return {
        **bench.header("floor", model_name, dataset, config_files, overrides, rounds),
        "times_s": times,
        "median_s": median,
        "ratio": paired_ratio(times),
        "ratio_of_medians": median["runner"] / median["loop"],
        "loader_share": median["loader"] / median["loop"],
        "losses": {k: v for k, v in losses.items() if k != "loader"},
        "loss_match": all(abs(x - loop_loss) <= 1e-6 * max(1.0, abs(loop_loss)) for x in computed),
        "cpu_note": "timed alternately in one process on a CPU shared with other jobs",
    }


COMPILE_PASSES = ("eager_runner", "compiled_runner", "eager_loop", "compiled_loop")


def graphs_compiled() -> int:
    """Graphs torch.compile has built in this process so far (dynamo's ``unique_graphs``)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def measure_compile(model_name: str, dataset: str, config_files: list[str], overrides: dict,
                    batches: int, rounds: int, mode: str = "default", fallback_random: bool = False) -> dict:
    """Eager vs ``torch.compile``d ``calculate_loss`` in one process (the ``compile`` record).

    ``fallback_random``: inductor's option of the same name (random ops such as dropout draw
    from eager's generator, so the compiled step's dropout masks are eager's; without it
    inductor draws its own)."""
    bench = Bench(model_name, dataset, config_files, overrides, batches)
    model, torch = bench.model, bench.torch
    import torch._inductor.config

    torch._inductor.config.fallback_random = fallback_random
    compiled = torch.compile(model.calculate_loss, mode=mode)  # the bound method; weights untouched

    def use(kind: str):
        def run() -> float:
            if kind.startswith("compiled"):
                model.calculate_loss = compiled
            else:
                vars(model).pop("calculate_loss", None)
            return bench.run_runner() if kind.endswith("runner") else bench.run_loop()
        return run

    passes = {k: use(k) for k in COMPILE_PASSES}
    warmup_s = {}
    for name in (*COMPILE_PASSES, "compiled_runner", "compiled_loop"):  # compile + recompiles, untimed
        seconds, _ = bench.timed(passes[name])
        warmup_s.setdefault(name, []).append(seconds)
    after_warmup = graphs_compiled()
    times: dict[str, list[float]] = {k: [] for k in passes}
    losses: dict[str, list[float]] = {k: [] for k in passes}
    orders = [COMPILE_PASSES, tuple(reversed(COMPILE_PASSES))]
    for r in range(rounds):
        for name in orders[r % 2]:
            seconds, loss = bench.timed(passes[name])
            times[name].append(seconds)
            losses[name].append(loss)
    vars(model).pop("calculate_loss", None)
    median = {k: statistics.median(v) for k, v in times.items()}

    def loss_diff(kind: str) -> float:
        return max(abs(c - e) for c, e in zip(losses[f"compiled_{kind}"], losses[f"eager_{kind}"]))

    eager = losses["eager_loop"][0]
    return {
        **bench.header("compile", model_name, dataset, config_files, overrides, rounds),
        "compile_mode": mode,
        "fallback_random": fallback_random,
        "warmup_s": warmup_s,
        "compiles": {"warmup": after_warmup, "timed": graphs_compiled() - after_warmup},
        "times_s": times,
        "median_s": median,
        "ratio": paired_ratio(times, "compiled_runner", "eager_runner"),
        "loop_ratio": paired_ratio(times, "compiled_loop", "eager_loop"),
        "losses": losses,
        "loss_abs_diff": {"runner": loss_diff("runner"), "loop": loss_diff("loop")},
        "loss_identical": all(losses[f"compiled_{k}"] == losses[f"eager_{k}"] for k in ("runner", "loop")),
        "loss_match": all(abs(x - eager) <= 1e-6 * max(1.0, abs(eager)) for v in losses.values() for x in v),
        "cpu_note": "timed alternately in one process on a CPU shared with other jobs",
    }


def main(argv: list[str] | None = None) -> int:
    from recbole_attn.compiled import COMPILE_MODES

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
    p.add_argument("--compile", action="store_true", help="eager vs torch.compile'd calculate_loss instead (record kind 'compile')")
    p.add_argument("--compile_mode", default="default", choices=COMPILE_MODES,
                   help="torch.compile mode with --compile")
    p.add_argument("--fallback_random", action="store_true",
                   help="with --compile: compiled random ops (dropout) draw from eager's generator")
    p.add_argument("--out", default=None, help="record folder (default: benchmarks/records/speed/floor, or .../compile)")
    args = p.parse_args(argv)
    if args.batches < 1 or args.rounds < 1:
        p.error("--batches and --rounds must be >= 1")
    files = args.config_files.split() if args.config_files is not None else default_config_files(args.model, args.dataset)
    overrides = {"seed": args.seed, "torch_threads": args.threads, "show_progress": False, "state": "WARNING",
                 "device": args.device, "use_gpu": args.device != "cpu",
                 "checkpoint_dir": os.path.join(os.environ.get("TMPDIR", "/tmp"), "floor-ckpt"),
                 **json.loads(args.config)}
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from argv
    if args.compile:
        record = measure_compile(args.model, args.dataset, files, overrides, args.batches, args.rounds, args.compile_mode,
                                 args.fallback_random)
        shown = ("model", "median_s", "ratio", "loop_ratio", "compiles", "loss_abs_diff", "loss_match")
    else:
        record = measure(args.model, args.dataset, files, overrides, args.batches, args.rounds, args.profile)
        shown = ("model", "median_s", "ratio", "loader_share", "loss_match")
    if not record:
        return 0
    out = Path(args.out) if args.out else OUT[record["benchmark"]]
    out.mkdir(parents=True, exist_ok=True)
    name = f"{record['benchmark']}-{args.model}-{args.dataset}-{record['git_sha'][:8]}-{int(time.time())}.json"
    (out / name).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in shown}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
