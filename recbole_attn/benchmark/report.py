"""``recbole-attn report DIR``: markdown tables and PNG plots generated only from records.

Reads every ``*.jsonl`` file under DIR (records of ``recbole-attn benchmark``) and every
``pipeline_overhead-*.json`` (records of ``benchmarks/pipeline_overhead.py``), and writes
``DIR/report.md`` (or ``--doc``) plus plots next to it (or in ``--plots``). Papers' claims
listed in ``DIR/claims.yaml`` (or ``--claims``) are judged against every table that has
both rows. Tables whose records have learning curves get a curves plot; rows whose runs
reached the epoch cap before early stopping are marked "not converged". Every command
printed pastes into bash; a data folder of the machine that ran it is printed as
``DATA``, which each table says how to make. A re-ranker's table also holds its ranker's
rows: the initial list and, for runs of ``benchmark --ranker_control``, the ranker
retrained on train + validation (its control). ``--results FILE`` writes the "Reference results" page from the
reference-protocol records only instead (``recbole_attn.benchmark.results``). Nothing in
the output is typed by hand: rerun this after adding records.
A malformed line (a killed run's truncated last line) is skipped with a warning naming
the file and line; a folder without any record is an error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from recbole_attn.benchmark.runner import CONTROL, read_records
from recbole_attn.errors import ConfigError

# RecBole's metrics where smaller is better (recbole.evaluator.smaller_metrics, lower case).
SMALLER_IS_BETTER = {"logloss", "rmse", "mae"}

# Printed commands name a data folder of the machine that ran them as DATA (RecBole's
# bundled ``recbole/dataset_example`` stays as it is); CONVERT makes DATA/<dataset>/ from
# the raw files of README's dataset section.
DATA = "DATA"
CONVERT = {
    "beauty": "recbole-attn convert s3rec --seq Beauty.txt --attributes Beauty_item2attributes.json --name beauty --out DATA",
    "toys": "recbole-attn convert s3rec --seq Toys_and_Games.txt --attributes Toys_and_Games_item2attributes.json "
            "--name toys --out DATA",
    "lastfm": "recbole-attn convert s3rec --seq LastFM.txt --attributes LastFM_item2attributes.json --name lastfm --out DATA",
    "taobao": "recbole-attn convert taobao --csv UserBehavior_head.csv --out DATA --category-conflict first",
}


def smaller_is_better(metric: str) -> bool:
    """Whether a metric (``ndcg@10``, ``logloss``, ...) improves downwards."""
    return metric.split("@")[0] in SMALLER_IS_BETTER


def load_records(root: Path) -> tuple[list[dict], list[dict]]:
    """(benchmark run records, pipeline-overhead records) found under ``root``; other
    benchmarks' JSON lines (``benchmarks/scale.py``'s, no dataset and seed) are not runs."""
    runs, overhead = [], []
    for path in sorted(root.rglob("*.jsonl")):
        runs += [r for r in read_records(path) if "dataset" in r and "seed" in r]
    for path in sorted(root.rglob("pipeline_overhead-*.json")):
        overhead.append(json.loads(path.read_text()))
    return runs, overhead


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(mean: float, std: float, n: int, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def label(record: dict) -> str:
    """A table row's name: the run's ``--label``, else its model; a re-ranker's row also
    names its ranker (``SASRec + PRM``). A run of a model that a later fix changed carries
    ``superseded`` (what changed) and keeps its row, named ``<row> (before fix)``, or
    ``<row> (<superseded_tag>)`` where a model was fixed more than once."""
    if record.get("row"):
        return record["row"]
    name = record.get("label") or record["model"]
    if record.get("superseded"):
        name += f" ({record.get('superseded_tag') or 'before fix'})"
    return f"{record['ranker']} + {name}" if record.get("ranker") else name


def _ranker_row(record: dict, run: dict, row: str, test: dict) -> dict:
    """A ranker's row of a re-ranking record: ``test`` with the ranker's own epochs, epoch
    time, parameters and training curve; the command stays the re-ranking run's."""
    return {
        **record,
        "row": row,
        "test": test,
        "epochs_trained": run["epochs_trained"],
        "median_epoch_s": run["median_epoch_s"],
        "parameters": run["parameters"],
        # the ranker's own training (absent from rankers recorded before curves were kept)
        "curve": run.get("curve"),
        "stopped_early": run.get("stopped_early"),
        "epoch_cap": run.get("epoch_cap"),
    }


def initial_lists(records: list[dict]) -> list[dict]:
    """Rows for the rankers of re-ranking records, once per ranker checkpoint: the initial
    list (each record's ``initial_test``, measured by the re-ranker's evaluator) and, for
    records of ``--ranker_control``, the control (``control_run``: the ranker retrained on
    train + the validation-point rows the re-ranker learns from, on the re-ranker's
    metrics), row ``<ranker> (train + validation)``. The command beside each row stays the
    re-ranking run's, which reproduces it."""
    out, seen = [], set()
    for r in records:
        run = r.get("ranker_run")
        if not run or "initial_test" not in r:
            continue
        for name, ranker_run, test in (
            ("initial list", run, r["initial_test"]),
            (CONTROL, r.get("control_run"), (r.get("control_run") or {}).get("test")),
        ):
            if not ranker_run:
                continue
            key = (r["dataset"], json.dumps(r.get("config_files")), ranker_run["model"], ranker_run["options_sha1"],
                   r["seed"], name)
            if key in seen:
                continue
            seen.add(key)
            test = {k: v for k, v in test.items() if k in r["initial_test"]}  # the re-ranker's metrics only
            out.append(_ranker_row(r, ranker_run, f"{ranker_run['model']} ({name})", test))
    return out


def _is_bundled(path: str) -> bool:
    """Whether a ``data_path`` is RecBole's bundled dataset folder (``recbole/dataset_example``)."""
    return Path(path.rstrip("/\\")).parts[-2:] == ("recbole", "dataset_example")


def portable(override: str) -> str:
    """An override as printed: ``--data_path=<a folder of the machine>`` -> ``--data_path=DATA``."""
    key, sep, value = override.partition("=")
    return f"{key}={DATA}" if key == "--data_path" and sep and not _is_bundled(value) else override


def data_note(records: list[dict]) -> list[str]:
    """What DATA is, for a table whose printed commands name it (else nothing)."""
    if not any(portable(o) != o for r in records for o in r.get("overrides") or []):
        return []
    parts = []
    for d in sorted({r["dataset"] for r in records}):
        if d in CONVERT:
            parts.append(f"`{DATA}/{d}/`, which `{CONVERT[d]}` writes, run in the folder of the raw files "
                         "(README, datasets)")
        else:
            parts.append(f"`{DATA}/{d}/`, the dataset's RecBole atomic files (`{d}.inter`, ...)")
    return [f"`{DATA}` (`--data_path`): the folder that holds " + "; and ".join(parts) + ".", ""]


def _shared_value(records: list[dict], key: str, key_cfg: bool = False):
    values = {json.dumps(r.get("config", {}).get(key) if key_cfg else r.get(key), sort_keys=True) for r in records}
    return json.loads(values.pop()) if len(values) == 1 else None


def _settings(records: list[dict]) -> str:
    """The settings every run of a group shares: config files, overrides, key config values."""
    parts = []
    config_files = _shared_value(records, "config_files")
    if config_files:
        parts.append("config files " + ", ".join(Path(f).name for f in config_files))
    overrides = _shared_value(records, "overrides")
    if overrides:
        parts.append("overrides `" + " ".join(shell_quote(portable(o)) for o in overrides) + "`")
    for key in ("eval_args", "MAX_ITEM_LIST_LENGTH", "train_batch_size", "epochs", "stopping_step"):
        value = _shared_value(records, key, key_cfg=True)
        if value is not None:
            parts.append(f"{key}={value}")
    return "; ".join(parts)


def shell_quote(arg: str) -> str:
    """``arg`` as one bash word: as it is when safe, else in single quotes, or in double
    quotes when it holds single quotes and nothing bash expands inside double quotes
    (``"--eval_args={'mode': 'full'}"`` reads better than ``shlex.quote``'s escapes)."""
    quoted = shlex.quote(arg)
    if quoted == arg or "'" not in arg or any(c in arg for c in '"$`\\!'):
        return quoted
    return f'"{arg}"'


def command(records: list[dict]) -> str:
    """The ``recbole-attn benchmark`` command line that reproduces a group of runs
    (runs of one row, or rows that differ only in their model); for superseded runs, on
    their own commit. Every value is shell-quoted where needed (``shell_quote``), so the
    line pastes into bash as printed: ``--eval_args={'mode': 'full'}`` is one argument;
    a data folder is printed as ``DATA`` (``portable``, ``data_note``)."""
    first = records[0]
    q = shell_quote
    models = ",".join(dict.fromkeys(r["model"] for r in records))
    seeds = ",".join(str(s) for s in sorted({r["seed"] for r in records}))
    parts = ["recbole-attn benchmark", f"--models {q(models)}", f"--dataset {q(first['dataset'])}", f"--seeds {seeds}"]
    if first.get("config_files"):
        parts.append("--config_files " + q(" ".join(first["config_files"])))
    if first.get("kind") == "throughput":
        parts.append("--throughput")
    if first.get("label"):
        parts.append(f"--label {q(first['label'])}")
    if first.get("ranker"):
        parts.append(f"--ranker {q(first['ranker'])}")
    if first.get("ranker_config_files"):
        parts.append("--ranker_config_files " + q(" ".join(first["ranker_config_files"])))
    if first.get("ranker_control"):
        parts.append("--ranker_control")
    parts += [q(portable(o)) for o in first.get("overrides") or []]
    if first.get("superseded"):  # the model changed since: the command runs on the run's own commit
        parts.insert(0, f"git checkout {first['git_sha'][:10]} &&")
    return " ".join(parts)


def commands(records: list[dict], per_row: bool = False) -> list[str]:
    """One ``Command:`` line when every row shares its options (unless ``per_row``), else
    one command per row; then what ``DATA`` is where a command names it."""
    if not per_row and all(not r.get("label") and not r.get("ranker") and not r.get("superseded") for r in records) \
            and _shared_value(records, "overrides") is not None:
        return [f"Command: `{command(records)}`", "", *data_note(records)]
    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_label[label(r)].append(r)
    return ["Commands, per row:", ""] + [
        f"- {name}: `{command(rs)}`" for name, rs in sorted(by_label.items())
    ] + ["", *data_note(records)]


def tables(records: list[dict]) -> dict[str, list[dict]]:
    """Records per table: one table per dataset, or per dataset and config files where runs
    of one dataset used different config files (e.g. a CPU and a GPU preset)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["dataset"], tuple(Path(f).stem for f in r.get("config_files") or []))].append(r)
    out = {}
    for (dataset, stems), rs in sorted(groups.items()):
        several = sum(1 for key in groups if key[0] == dataset) > 1
        out[f"{dataset} ({', '.join(stems) or 'no config file'})" if several else dataset] = rs
    return out


def summarise(records: list[dict]) -> dict[str, dict]:
    """Per row (label): n seeds, test metrics (mean, std), epochs, epoch time, memory, parameters."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_model[label(r)].append(r)
    out = {}
    for model, rs in by_model.items():
        metrics = sorted({k for r in rs for k in r["test"]})
        out[model] = {
            "n": len(rs),
            "seeds": sorted(r["seed"] for r in rs),
            "test": {m: mean_std([r["test"][m] for r in rs if m in r["test"]]) for m in metrics},
            "epochs": statistics.fmean(r["epochs_trained"] for r in rs),
            "epoch_s": mean_std([r["median_epoch_s"] for r in rs if r["median_epoch_s"] is not None]),
            "memory_mib": statistics.fmean(r["peak_memory_bytes"] for r in rs) / 2**20,
            "memory_kind": rs[0]["peak_memory_kind"],
            "parameters": rs[0]["parameters"],
            "converged": convergence(rs),
        }
    return out


def _stopped_early(record: dict) -> bool | None:
    if record.get("stopped_early") is not None or record.get("row"):  # a ranker's row: not its config
        return record.get("stopped_early")
    cfg = record.get("config") or {}
    epochs, patience = cfg.get("epochs"), cfg.get("stopping_step")
    if isinstance(epochs, int) and isinstance(patience, int) and epochs < patience + 2:
        return False
    return None


def convergence(records: list[dict]) -> str:
    """A row's convergence cell: ``yes`` when early stopping ended every run before its
    epoch cap; ``not converged`` naming how many runs reached the cap first; ``unknown``
    for runs recorded before ``stopped_early`` was kept (never claimed converged), except
    that a cap below ``stopping_step + 2`` epochs leaves early stopping no chance to end
    a run (it needs a best epoch and then ``stopping_step + 1`` epochs without gain)."""
    flags = [_stopped_early(r) for r in records]
    n, at_cap, unknown = len(records), [r for r, f in zip(records, flags) if f is False], flags.count(None)
    if unknown == n:
        return "unknown (not recorded)"
    if not at_cap and not unknown:
        return "yes"
    parts = []
    if at_cap:
        caps = sorted({r.get("epoch_cap") or r.get("config", {}).get("epochs") for r in at_cap} - {None})
        parts.append(f"not converged: {len(at_cap)}/{n} runs reached the cap"
                     + (f" of {'/'.join(map(str, caps))} epochs" if caps else ""))
    else:
        parts.append(f"early-stopped: {n - unknown}/{n} runs")
    if unknown:
        parts.append(f"unknown for {unknown}/{n} (not recorded)")
    return "; ".join(parts)


def _best(summary: dict[str, dict], metric: str) -> str:
    pick = min if smaller_is_better(metric) else max
    return pick(summary, key=lambda m: summary[m]["test"].get(metric, (math.nan,))[0])


def train_table(dataset: str, records: list[dict], per_row: bool = False) -> list[str]:
    """A table's markdown: header, settings, command(s) (one per row with ``per_row``), rows."""
    summary = summarise(records)
    metrics = sorted({m for s in summary.values() for m in s["test"]})
    devices = sorted({r["device"] for r in records})
    seeds = sorted({r["seed"] for r in records})
    lines = [
        f"### {dataset}: test metrics, mean ± std over seeds {', '.join(map(str, seeds))}",
        "",
        f"Device: {'; '.join(devices)}. Settings: {_settings(records)}. Best per column in bold."
        + (" Times on a CPU shared with other jobs vary between runs: the ± shows by how much."
           if any(d.startswith("CPU") for d in devices) else ""),
        "",
        "Converged: early stopping (patience `stopping_step` on the validation metric) ended every"
        " run before the epoch cap; *not converged*: a run reached the cap first, its metric may"
        " still have been rising; *unknown*: runs recorded before this was kept.",
        "",
        *commands(records, per_row),
        "| model | runs | " + " | ".join(metrics)
        + " | epochs | converged | s/epoch (median per run; mean ± std) | peak memory MiB | parameters |",
        "|---|---|" + "---|" * len(metrics) + "---|---|---|---|---|",
    ]
    best = {m: _best(summary, m) for m in metrics}
    for model, s in sorted(summary.items()):
        cells = []
        for m in metrics:
            if m not in s["test"]:
                cells.append("")
                continue
            text = _fmt(*s["test"][m], s["n"])
            cells.append(f"**{text}**" if best[m] == model else text)
        lines.append(
            f"| {model} | {s['n']} | " + " | ".join(cells)
            + f" | {s['epochs']:.1f} | {s['converged']} | {_fmt(*s['epoch_s'], s['n'], digits=1)} | {s['memory_mib']:.0f} ({s['memory_kind']}) | {s['parameters']:,} |"
        )
    return lines + [""]


def throughput_table(dataset: str, records: list[dict]) -> list[str]:
    by_model: dict[str, list[dict]] = defaultdict(list)
    memory: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_model[label(r)].append(r["throughput"])
        memory[label(r)].append(r["peak_memory_bytes"] / 2**20)
    lines = [
        f"### {dataset}: training steps through RecBole's data loader vs on pre-loaded batches",
        "",
        f"Device: {'; '.join(sorted({r['device'] for r in records}))}. "
        f"Settings: {_settings(records)}. Ratio = loader time / pre-loaded time (1.0 = no overhead).",
        "",
        *commands(records),
        "| model | runs | steps | loader steps/s | pre-loaded steps/s | overhead ratio | peak memory MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, ts in sorted(by_model.items()):
        lines.append(
            f"| {model} | {len(ts)} | {ts[0]['steps']} "
            f"| {statistics.fmean(t['pipeline_steps_per_s'] for t in ts):.2f} "
            f"| {statistics.fmean(t['direct_steps_per_s'] for t in ts):.2f} "
            f"| {statistics.fmean(t['overhead_ratio'] for t in ts):.2f}x "
            f"| {statistics.fmean(memory[model]):.0f} ({records[0]['peak_memory_kind']}) |"
        )
    return lines + [""]


def overhead_table(records: list[dict]) -> list[str]:
    lines = [
        "## Training epoch: RecBole's own pipeline vs recbole-attn's runner",
        "",
        "Same model, data, config and seed, one process after the other on one machine",
        "(`python benchmarks/pipeline_overhead.py --model SASRec --dataset ml-100k --seed 2020`).",
        "`recbole` = RecBole 1.2.1's Config/Trainer as its `run_recbole` uses them, plus only the",
        "numpy aliases it needs to start on numpy 2; `ours` = `recbole_attn` with every compat",
        "fix (anomaly mode off, fused GELU). A `+` after the git SHA: uncommitted changes.",
        "",
        "| date | git | device | model / dataset | seed | epochs | recbole s/epoch | ours s/epoch | ratio | train loss recbole / ours | same loss (4 sig.) | same valid (3 dp) | valid NDCG@10 recbole / ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        rb, ours = r["runs"]["recbole"], r["runs"]["ours"]
        n = len(ours["epoch_times_s"])
        lines.append(
            f"| {r['date'][:10]} | `{r['git_sha'][:8]}`{'+' if r['git_dirty'] else ''} | {r['device']} "
            f"| {r['model']} / {r['dataset']} | {r['seed']} | {n} "
            f"| {sum(rb['epoch_times_s']) / n:.1f} | {sum(ours['epoch_times_s']) / n:.1f} "
            f"| {r['epoch_time_ratio']:.2f}x "
            f"| {rb['train_losses'][-1]:.4f} / {ours['train_losses'][-1]:.4f} "
            f"| {'yes' if r['loss_match_4_significant'] else 'NO'} "
            f"| {'yes' if r['valid_match_3_decimals'] else 'NO'} "
            f"| {rb['valid_result'].get('ndcg@10', math.nan):.4f} / {ours['valid_result'].get('ndcg@10', math.nan):.4f} |"
        )
    return lines + [""]


def plot_dataset(dataset: str, records: list[dict], plot_dir: Path) -> list[Path]:
    """Metric bars with error bars, and epoch-time / peak-memory bars: two PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(records)
    models = sorted(summary)
    metrics = sorted({m for s in summary.values() for m in s["test"]})
    plot_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        means = [summary[m]["test"].get(metric, (math.nan, 0))[0] for m in models]
        stds = [summary[m]["test"].get(metric, (0, 0))[1] for m in models]
        ax.bar(models, means, yerr=stds, capsize=3, color="tab:blue")
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    fig.suptitle(f"{dataset}: test metrics (mean ± std over seeds)")
    fig.tight_layout()
    slug = _slug(dataset)
    paths.append(plot_dir / f"{slug}-metrics.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(8, 3.4))
    ax_t.bar(models, [summary[m]["epoch_s"][0] for m in models],
             yerr=[summary[m]["epoch_s"][1] for m in models], capsize=3, color="tab:orange")
    ax_t.set_title("median epoch time (s)")
    ax_m.bar(models, [summary[m]["memory_mib"] for m in models], color="tab:green")
    ax_m.set_title(f"peak memory (MiB, {summary[models[0]]['memory_kind']})")
    for ax in (ax_t, ax_m):
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    fig.suptitle(f"{dataset}: cost ({'; '.join(sorted({r['device'] for r in records}))})", fontsize=9)
    fig.tight_layout()
    paths.append(plot_dir / f"{slug}-cost.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def mean_curve(records: list[dict], metric: str) -> dict[str, list[float]]:
    """One row's learning curve, mean over its runs (seeds): per epoch index, the mean epoch,
    wall time, train loss and validation ``metric`` of the runs that reached that epoch
    (a run that stopped early leaves the later means to the others)."""
    by_index: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        for i, point in enumerate(r.get("curve") or []):
            by_index[i].append(point)
    out: dict[str, list[float]] = {"epoch": [], "wall_s": [], "train_loss": [], "valid": [], "runs": []}
    for i in sorted(by_index):
        points = by_index[i]
        valid = [p["valid"][metric] for p in points if metric in (p.get("valid") or {})]
        out["epoch"].append(statistics.fmean(p["epoch"] for p in points))
        out["wall_s"].append(statistics.fmean(p["wall_s"] for p in points))
        out["train_loss"].append(statistics.fmean(p["train_loss"] for p in points))
        out["valid"].append(statistics.fmean(valid) if valid else math.nan)
        out["runs"].append(len(points))
    return out


def curve_metric(records: list[dict]) -> str | None:
    """The validation metric the curves of a table show: the runs' ``valid_metric`` (lower
    case, as in the records), else the first metric the curves hold; None without curves."""
    for r in records:
        if r.get("curve"):
            metric = str(r.get("config", {}).get("valid_metric") or "").lower()
            keys = {k for p in r["curve"] for k in (p.get("valid") or {})}
            if metric in keys:
                return metric
            if keys:
                return sorted(keys)[0]
    return None


def plot_curves(dataset: str, records: list[dict], plot_dir: Path) -> list[Path]:
    """Learning curves of a table's rows whose records have them (one line per row, mean
    over seeds): validation metric vs epoch and vs wall time, train loss vs epoch; one PNG,
    or none when no record has a curve."""
    metric = curve_metric(records)
    if metric is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_row: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("curve"):
            by_row[label(r)].append(r)
    fig, (ax_e, ax_t, ax_l) = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, (row, rs) in enumerate(sorted(by_row.items())):
        c = mean_curve(rs, metric)
        style = {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[i // 10 % 3], "linewidth": 1.2,
                 "marker": "o" if len(c["epoch"]) < 3 else None, "markersize": 4}  # a point alone shows
        ax_e.plot(c["epoch"], c["valid"], label=f"{row} ({len(rs)})", **style)
        ax_t.plot(c["wall_s"], c["valid"], **style)
        ax_l.plot(c["epoch"], c["train_loss"], **style)
    ax_e.set(xlabel="epoch", ylabel=f"valid {metric}", title=f"valid {metric} vs epoch")
    ax_t.set(xlabel="seconds since training start", ylabel=f"valid {metric}", title=f"valid {metric} vs wall time")
    ax_l.set(xlabel="epoch", ylabel="train loss", title="train loss vs epoch")
    for ax in (ax_e, ax_t, ax_l):
        ax.grid(alpha=0.3)
    fig.legend(*ax_e.get_legend_handles_labels(), loc="center right", fontsize=7, title="row (runs)", title_fontsize=7)
    fig.suptitle(f"{dataset}: learning curves, mean over seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    plot_dir.mkdir(parents=True, exist_ok=True)
    path = plot_dir / f"{_slug(dataset)}-curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")


CLAIM_KEYS = ("claim", "source", "better", "worse", "metric")


def load_claims(path: Path) -> list[dict]:
    """Claims from a YAML list of mappings with the keys of ``CLAIM_KEYS``: row ``better``
    is claimed to beat row ``worse`` on ``metric`` (the direction of each metric is known)."""
    claims = yaml.safe_load(path.read_text()) or []
    if not isinstance(claims, list):
        raise SystemExit(f"recbole-attn report: error: {path} must hold a YAML list of claims")
    for i, c in enumerate(claims):
        missing = [k for k in CLAIM_KEYS if not isinstance(c, dict) or not c.get(k)]
        if missing:
            raise SystemExit(
                f"recbole-attn report: error: {path}, claim {i + 1}: missing {', '.join(missing)}"
                f" (each claim needs {', '.join(CLAIM_KEYS)})"
            )
        c["metric"] = str(c["metric"]).lower()
    return claims


def judge(better: tuple[float, float], worse: tuple[float, float], metric: str) -> tuple[float, str]:
    """(difference in the claimed direction, verdict) of two (mean, std) over seeds: the claim
    holds when the difference exceeds the larger std, fails when it is below minus that, and
    is a tie in between."""
    sign = -1.0 if smaller_is_better(metric) else 1.0
    diff = sign * (better[0] - worse[0])
    noise = max(better[1], worse[1])
    return diff, "holds" if diff > noise else "does not hold" if diff < -noise else "tie (within one std)"


def judge_claims(claims: list[dict], train_tables: dict[str, list[dict]]) -> list[dict]:
    """Each claim on every table whose two rows both have at least two runs: ``{"claim"
    (the claim's mapping), "table", "better", "worse" (the rows' ``summarise`` entries),
    "difference", "verdict"}`` (see ``judge``); a claim no table can judge gets one entry
    with ``table`` None."""
    out = []
    summaries = {name: summarise(records) for name, records in train_tables.items()}
    for c in claims:
        judged = False
        m = c["metric"]
        for name, summary in summaries.items():
            a, b = summary.get(c["better"]), summary.get(c["worse"])
            if not (a and b and a["n"] >= 2 and b["n"] >= 2 and m in a["test"] and m in b["test"]):
                continue
            diff, verdict = judge(a["test"][m], b["test"][m], m)
            out.append({"claim": c, "table": name, "better": a, "worse": b, "difference": diff, "verdict": verdict})
            judged = True
        if not judged:
            out.append({"claim": c, "table": None, "better": None, "worse": None, "difference": None, "verdict": None})
    return out


NOT_MEASURED = "not measured: no table has both rows with >= 2 runs"


def judged_cells(j: dict) -> list[str]:
    """The cells metric, claimed better, claimed worse, difference, verdict of one judgement."""
    c, m = j["claim"], j["claim"]["metric"]
    if j["table"] is None:
        return [m, c["better"], c["worse"], "", NOT_MEASURED]
    a, b = j["better"], j["worse"]
    return [m, f"{c['better']} {_fmt(*a['test'][m], a['n'])}", f"{c['worse']} {_fmt(*b['test'][m], b['n'])}",
            f"{j['difference']:+.4f}", j["verdict"]]


def claims_section(claims: list[dict], train_tables: dict[str, list[dict]]) -> list[str]:
    """One line per (claim, table with both rows at >= 2 runs); a claim no table can judge
    says so."""
    lines = [
        "## Papers' claims, judged on these tables",
        "",
        "Each claim of the claims file, on every table whose two rows both have at least two runs:",
        "the difference of the means in the claimed direction, and the verdict: *holds* when it",
        "exceeds the larger of the two stds, *does not hold* when it is below minus that, *tie* in",
        "between. A verdict is for the training budget in its table's settings, not the paper's.",
        "",
        "| claim | paper | table | metric | claimed better | claimed worse | difference | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for j in judge_claims(claims, train_tables):
        cells = [j["claim"]["claim"], j["claim"]["source"], j["table"] or "", *judged_cells(j)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def render(root: Path, doc: Path, plot_dir: Path, claims: list[dict] | None = None) -> str:
    """Write the markdown report (and plots) for every record under ``root``, with the
    ``claims`` judged (see ``claims_section``); returns the text.

    Raises:
        ConfigError: no (well-formed) record under ``root``.
    """
    runs, overhead = load_records(root)
    if not runs and not overhead:
        raise ConfigError(
            f"report: no records under {root}: expected records.jsonl files written by "
            "`recbole-attn benchmark --out DIR` (or pipeline_overhead-*.json)"
        )
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `recbole-attn report` from the records under `{os.path.relpath(root, doc.parent)}`;",
        "do not edit by hand.",
        "",
    ]
    if claims:
        lines += ["Papers' claims checked against these tables: [see below](#papers-claims-judged-on-these-tables).", ""]
    if overhead:
        lines += overhead_table(overhead)
    ok = [r for r in runs if r.get("status") == "ok"]
    train_tables: dict[str, list[dict]] = {}
    for kind, title in (("train", "Model comparison"), ("throughput", "Data pipeline overhead")):
        group = [r for r in ok if r.get("kind", "train") == kind]
        if not group:
            continue
        lines += [f"## {title}", ""]
        if kind == "train":
            group += initial_lists(group)
        group_tables = tables(group)
        if kind == "train":
            train_tables = group_tables
        for name, records in group_tables.items():
            if kind == "train":
                lines += train_table(name, records)
                for path in plot_dataset(name, records, plot_dir):
                    lines += [f"![{path.stem}]({os.path.relpath(path, doc.parent)})", ""]
                curves = plot_curves(name, records, plot_dir)
                if curves:
                    lines += ["Learning curves (mean over seeds; past the epoch where a seed stopped early, "
                              "the mean of the seeds still training; the legend counts a row's runs):", ""]
                    lines += [f"![{path.stem}]({os.path.relpath(path, doc.parent)})" for path in curves] + [""]
            else:
                lines += throughput_table(name, records)
    if claims:
        lines += claims_section(claims, train_tables)
    failed = [r for r in runs if r.get("status") != "ok"]
    if failed:
        lines += ["## Failed runs", ""]
        lines += [
            f"- {r['model']} on {r['dataset']}, seed {r['seed']} ({r['date'][:10]}): "
            f"`{(r.get('error') or '').strip().splitlines()[-1] if r.get('error') else 'no error text'}`"
            for r in failed
        ]
        lines.append("")
    text = "\n".join(lines)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return text


def report_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="recbole-attn report", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="folder with records (searched recursively)")
    p.add_argument("--doc", default=None, help="markdown file to write (default DIR/report.md)")
    p.add_argument("--plots", default=None, help="folder for PNG plots (default: next to the doc; "
                                                 "with --results: img/ref next to it)")
    p.add_argument("--claims", default=None, help="YAML list of papers' claims to judge (default: DIR/claims.yaml if present)")
    p.add_argument("--results", default=None,
                   help="write the 'Reference results' page (e.g. docs/results.md) from the ref-* records only, "
                        "instead of the report")
    p.add_argument("--paper_claims", default=None,
                   help="with --results: YAML list of the papers' own figures per claim "
                        "(default: DIR/paper_claims.yaml if present)")
    args = p.parse_args(argv)
    root = Path(args.dir).resolve()
    if not root.is_dir():
        raise SystemExit(f"recbole-attn report: error: no such folder: {root}")
    if args.paper_claims and not args.results:
        p.error("--paper_claims needs --results")
    if args.results and args.doc:
        p.error("--results and --doc write different pages: give one")
    claims_path = Path(args.claims) if args.claims else root / "claims.yaml"
    if args.claims and not claims_path.is_file():
        raise SystemExit(f"recbole-attn report: error: --claims: no such file: {claims_path}")
    claims = load_claims(claims_path) if claims_path.is_file() else None
    if args.results:
        from recbole_attn.benchmark.results import load_paper_claims, render_results

        doc = Path(args.results).resolve()
        paper_path = Path(args.paper_claims) if args.paper_claims else root / "paper_claims.yaml"
        if args.paper_claims and not paper_path.is_file():
            raise SystemExit(f"recbole-attn report: error: --paper_claims: no such file: {paper_path}")
        paper = load_paper_claims(paper_path, claims or []) if paper_path.is_file() else None
        plot_dir = Path(args.plots).resolve() if args.plots else doc.parent / "img" / "ref"
        render_results(root, doc, plot_dir, claims, paper)
    else:
        doc = Path(args.doc).resolve() if args.doc else root / "report.md"
        plot_dir = Path(args.plots).resolve() if args.plots else doc.parent
        render(root, doc, plot_dir, claims)
    print(f"wrote {doc}")
    return 0
