"""A report table's rows from benchmark records: per row (``label``), the mean ± std over
seeds of each test metric, epochs, epoch time, memory, parameters (``summarise``) and
whether the runs converged (``convergence``); the cell format and metric direction the
tables, plots and judged claims share (``recbole_attn.benchmark.report``, ``plots``,
``claims``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict


# RecBole's metrics where smaller is better (recbole.evaluator.smaller_metrics, lower case).
SMALLER_IS_BETTER = {"logloss", "rmse", "mae"}


def smaller_is_better(metric: str) -> bool:
    """Whether a metric (``ndcg@10``, ``logloss``, ...) improves downwards."""
    return metric.split("@")[0] in SMALLER_IS_BETTER


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
