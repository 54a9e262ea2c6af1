"""PNG plots of a report's tables: metric, epoch-time and memory bars per row
(``plot_dataset``), and learning curves averaged over seeds (``plot_curves``), for
``recbole-attn report`` (``recbole_attn.benchmark.report``, ``results``).
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

from recbole_attn.benchmark.summary import label, summarise


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


def loss_scale(losses: list[list[float]], span: float = 10.0) -> str:
    """'log' when the rows' train losses are all positive and differ by more than ``span``x
    (each model sums its own loss, so one row can dwarf the others on a linear axis), else
    'linear'."""
    values = [v for row in losses for v in row if not math.isnan(v)]
    return "log" if values and min(values) > 0 and max(values) > span * min(values) else "linear"


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
    curves = {row: mean_curve(rs, metric) for row, rs in sorted(by_row.items())}
    for i, (row, c) in enumerate(curves.items()):
        style = {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[i // 10 % 3], "linewidth": 1.2,
                 "marker": "o" if len(c["epoch"]) < 3 else None, "markersize": 4}  # a point alone shows
        ax_e.plot(c["epoch"], c["valid"], label=f"{row} ({len(by_row[row])})", **style)
        ax_t.plot(c["wall_s"], c["valid"], **style)
        ax_l.plot(c["epoch"], c["train_loss"], **style)
    ax_e.set(xlabel="epoch", ylabel=f"valid {metric}", title=f"valid {metric} vs epoch")
    ax_t.set(xlabel="seconds since training start", ylabel=f"valid {metric}", title=f"valid {metric} vs wall time")
    scale = loss_scale([c["train_loss"] for c in curves.values()])
    ax_l.set_yscale(scale)
    ax_l.set(xlabel="epoch", ylabel="train loss", title="train loss vs epoch" + (" (log scale)" if scale == "log" else ""))
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
