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

This module reads the records and writes the tables, their commands and the page; a
table's rows are summarised in ``recbole_attn.benchmark.summary``, the claims judged in
``recbole_attn.benchmark.claims`` and the plots drawn in ``recbole_attn.benchmark.plots``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
from collections import defaultdict
from pathlib import Path

from recbole_attn.benchmark.claims import claims_section, load_claims
from recbole_attn.benchmark.plots import plot_curves, plot_dataset
from recbole_attn.benchmark.runner import CONTROL, read_records
from recbole_attn.benchmark.summary import _fmt, label, smaller_is_better, summarise
from recbole_attn.errors import ConfigError


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


def load_records(root: Path) -> tuple[list[dict], list[dict]]:
    """(benchmark run records, pipeline-overhead records) found under ``root``; other
    benchmarks' JSON lines (``benchmarks/scale.py``'s, no dataset and seed) are not runs."""
    runs, overhead = [], []
    for path in sorted(root.rglob("*.jsonl")):
        runs += [r for r in read_records(path) if "dataset" in r and "seed" in r]
    for path in sorted(root.rglob("pipeline_overhead-*.json")):
        overhead.append(json.loads(path.read_text()))
    return runs, overhead


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
    metrics), row ``<ranker> (train + validation)``; a superseded record's rows say so
    (``<ranker> (initial list, before fix)``). The command beside each row stays the
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
            if r.get("superseded"):  # a ranker or re-ranker fixed since: its own row, as summary.label
                name += f", {r.get('superseded_tag') or 'before fix'}"
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


def _rows_by_value(records: list[dict], key: str, key_cfg: bool = False) -> dict[str, set[str]]:
    """The rows (``label``) of a group per value of ``key`` (of the record, or of its config
    with ``key_cfg``), each value as its JSON text."""
    rows: dict[str, set[str]] = defaultdict(set)
    for r in records:
        rows[json.dumps(r.get("config", {}).get(key) if key_cfg else r.get(key), sort_keys=True)].add(label(r))
    return rows


def _shared_value(records: list[dict], key: str, key_cfg: bool = False):
    values = _rows_by_value(records, key, key_cfg)
    return json.loads(next(iter(values))) if len(values) == 1 else None


def _value_order(text: str) -> tuple:
    """Sort key of a JSON value's text: numbers by value (5 before 35), then the others by text."""
    value = json.loads(text)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if number else (1, 0, text)


def _settings(records: list[dict]) -> str:
    """The settings of a group's runs: config files, overrides, key config values (one value
    where every run shares it, else each value with its rows)."""
    parts = []
    config_files = _shared_value(records, "config_files")
    if config_files:
        parts.append("config files " + ", ".join(Path(f).name for f in config_files))
    overrides = _shared_value(records, "overrides")
    if overrides:
        parts.append("overrides `" + " ".join(shell_quote(portable(o)) for o in overrides) + "`")
    for key in ("eval_args", "MAX_ITEM_LIST_LENGTH", "train_batch_size", "epochs", "stopping_step"):
        rows = _rows_by_value(records, key, key_cfg=True)
        if len(rows) == 1:
            value = json.loads(next(iter(rows)))
            if value is not None:
                parts.append(f"{key}={value}")
        elif key != "eval_args":  # a value the rows do not share, per row (the cloze models' extra position)
            ordered = sorted(rows.items(), key=lambda kv: (-len(kv[1]), _value_order(kv[0])))  # most rows first
            parts.append(f"{key}=" + " or ".join(f"{json.loads(v)} ({', '.join(sorted(names))})" for v, names in ordered))
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


def _best(summary: dict[str, dict], metric: str) -> set[str]:
    """The rows with the best mean of ``metric`` (every one of them where means are equal)."""
    means = {m: s["test"][metric][0] for m, s in summary.items() if metric in s["test"]}
    top = (min if smaller_is_better(metric) else max)(means.values())
    return {m for m, v in means.items() if v == top}


def logloss_note(records: list[dict]) -> list[str]:
    """What LogLoss measures where the test rows are each held-out item and its sampled
    negatives (``eval_args`` mode ``uniN`` / ``popN``) and training saw another ratio."""
    ratios = set()
    for r in records:
        config = r.get("config") or {}
        mode = ((config.get("eval_args") or {}).get("mode") or {})
        mode = mode.get("test") if isinstance(mode, dict) else mode
        train = (config.get("train_neg_sample_args") or {}).get("sample_num")
        if isinstance(mode, str) and mode[:3] in ("uni", "pop") and mode[3:].isdigit() and train:
            ratios.add((int(mode[3:]), train))
    if len(ratios) != 1:
        return []
    ((test, train),) = ratios
    return [
        f"LogLoss is over each held-out item and its {test} sampled negatives (1 positive in {test + 1}),"
        f" while training saw {train} negative(s) per positive: a low LogLoss here means low scores on"
        " the sampled negatives, not probabilities calibrated to the data's positive rate; rank by AUC and GAUC.",
        "",
    ]


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
        *(logloss_note(records) if "logloss" in metrics else []),
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
            cells.append(f"**{text}**" if model in best[m] else text)
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
