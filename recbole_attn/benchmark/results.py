"""``recbole-attn report DIR --results docs/results.md``: the "Reference results" page.

Generated from the reference-protocol records under DIR only: runs whose config files are
all ``ref-*.yaml`` presets (``benchmarks/presets/ref-*.yaml``, written by
``benchmarks/reference.sh``); every other record is ignored. The page holds one table per
dataset and protocol (mean ± std over seeds, the convergence of every row, the command
per row), the learning curves of each table, and the papers' claims (``claims.yaml``)
judged on these tables only, each beside the paper's own figure and dataset
(``paper_claims.yaml``), so a reader sees what was and was not reproduced. A grid run in
parts (across sessions or machines) shows how much of it is recorded: every ``grid.txt``
under DIR (``benchmarks/reference.sh`` writes the names of all its jobs, ``TABLE/ROW/seedS``,
into its output folder) is checked against the records in ``<that folder>/<job>/``, and the
page lists the runs not yet recorded.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import yaml

from recbole_attn.benchmark.claims import judge_claims, judged_cells
from recbole_attn.benchmark.plots import plot_curves
from recbole_attn.benchmark.report import initial_lists, load_records, train_table
from recbole_attn.benchmark.runner import read_records
from recbole_attn.benchmark.summary import summarise
from recbole_attn.errors import ConfigError

REFERENCE_PREFIX = "ref-"
GRID_FILE = "grid.txt"  # benchmarks/reference.sh: the names of the grid's jobs, one a line, in its output folder
PAPER_KEYS = ("claim", "citation", "dataset")  # required; ``figure`` and ``where`` may be empty (then ``note``)


def is_reference(record: dict) -> bool:
    """Whether a record ran the reference protocol: config files given, every one a ``ref-*`` preset."""
    files = record.get("config_files") or []
    return bool(files) and all(Path(f).name.startswith(REFERENCE_PREFIX) for f in files)


def reference_tables(records: list[dict]) -> dict[str, list[dict]]:
    """Records per table, one per dataset and protocol, the protocol's presets named in the
    table's name (``ml-100k, protocol ref-ml-100k``); re-ranking records add their rankers'
    rows (``initial_lists``: the initial list and, with ``--ranker_control``, the control)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records + initial_lists(records):
        groups[(r["dataset"], tuple(Path(f).stem for f in r["config_files"]))].append(r)
    return {f"{dataset}, protocol {' + '.join(stems)}": rs for (dataset, stems), rs in sorted(groups.items())}


def load_paper_claims(path: Path, claims: list[dict]) -> dict[str, dict]:
    """The papers' own figures, by claim text, from a YAML list of mappings with the keys
    of ``PAPER_KEYS`` plus ``figure`` and ``where`` (``~`` where no figure was taken from
    the paper's text; ``note`` then says why). Every entry must name a claim of ``claims``.

    Raises:
        ConfigError: not YAML, not a list, a key missing, or a claim the claims file lacks.
    """
    try:
        entries = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML ({err}); quote a value that holds ': '") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{path} must hold a YAML list of the papers' figures, one mapping per claim")
    known = {c["claim"] for c in claims}
    out = {}
    for i, e in enumerate(entries, start=1):
        missing = [k for k in PAPER_KEYS if not isinstance(e, dict) or not e.get(k)]
        if missing:
            raise ConfigError(f"{path}, entry {i}: missing {', '.join(missing)} (each entry needs {', '.join(PAPER_KEYS)})")
        if e["claim"] not in known:
            raise ConfigError(f"{path}, entry {i}: claim {e['claim']!r} is not in the claims file; "
                              "use a claim's text exactly as it is there")
        if not e.get("figure") and not e.get("note"):
            raise ConfigError(f"{path}, entry {i} ({e['claim']}): no figure: give figure and where, or a note saying why not")
        out[e["claim"]] = e
    return out


def paper_cell(entry: dict | None) -> str:
    """The paper's side of a claim: its figure (and where in the paper), its dataset."""
    if entry is None:
        return "no figure recorded"
    figure = f"{entry['figure']} ({entry['where']})" if entry.get("figure") else f"no figure: {entry['note']}"
    return f"{figure}; dataset: {entry['dataset']}"


def _converged_note(j: dict) -> str:
    rows = [s for s in (j["better"], j["worse"]) if s]
    return "" if all(s["converged"] == "yes" for s in rows) else " (a row is not converged)"


def _pending(row: str, pending: set[str]) -> bool:
    """Whether table row ``row`` may come from a grid job not yet recorded (row ``g`` of
    ``pending``): the job's own row, or a re-ranking job's (``g (initial list)``, ``g + PRM``)."""
    return any(row == g or row.startswith(g + " ") for g in pending)


def claims_lines(claims: list[dict], paper: dict[str, dict], tables: dict[str, list[dict]],
                 pending: set[str] = frozenset()) -> list[str]:
    """The claims section; ``pending``: the rows (``ROW`` of ``TABLE/ROW/seedS``) of the grid
    jobs not yet recorded, so a claim whose row is absent says whether the grid will bring it."""
    lines = [
        "## Papers' claims on the reference results",
        "",
        "Each claim, on every table above whose two rows both have at least two seeds: the",
        "difference of the means in the claimed direction and the verdict (*holds*: it exceeds the",
        "larger of the two stds; *does not hold*: it is below minus that; *tie* in between), marked",
        "where a row is not converged. Beside it, the paper's own figure and dataset: the paper's",
        "setting is not ours (its data, split, metric and candidates differ), so compare",
        "directions, not values.",
        "",
        "| claim | paper | paper's figure and dataset | our table | metric | claimed better | claimed worse"
        " | difference | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {row for records in tables.values() for row in summarise(records)}
    for j in judge_claims(claims, tables):
        c = j["claim"]
        entry = paper.get(c["claim"])
        cells = judged_cells(j)
        if j["table"] is not None:
            cells[-1] += _converged_note(j)
        elif c["better"] not in rows or c["worse"] not in rows:
            absent = [row for row in (c["better"], c["worse"]) if row not in rows]
            outside = [row for row in absent if not _pending(row, pending)]
            cells[-1] = (f"not in the reference grid: no row {', '.join(outside)}" if outside
                         else f"no row {', '.join(absent)} recorded yet (the grid is partial)")
        source = entry["citation"] if entry else c["source"]
        lines.append("| " + " | ".join([c["claim"], source, paper_cell(entry), j["table"] or "", *cells]) + " |")
    return lines + [""]


def overview(tables: dict[str, list[dict]]) -> list[str]:
    lines = ["| table | rows | runs | seeds per row | rows converged (every run early-stopped) |", "|---|---|---|---|---|"]
    for name, records in tables.items():
        summary = summarise(records)
        seeds = sorted({s["n"] for s in summary.values()})
        done = sum(s["converged"] == "yes" for s in summary.values())
        lines.append(f"| {name} | {len(summary)} | {len(records)} | "
                     f"{'/'.join(map(str, seeds))} | {done}/{len(summary)} |")
    return lines + [""]


def grid_progress(root: Path, doc: Path) -> tuple[list[str], set[str]]:
    """The page's "Grid progress" lines for every ``grid.txt`` under ``root``, and the rows
    (``ROW``) of the jobs not yet recorded (empty: every grid complete). A job (``TABLE/ROW/seedS``) is recorded when
    ``<grid folder>/<job>/records.jsonl`` holds a run with status ok that no later fix of its
    model superseded."""
    lines, pending = [], set()
    for grid in sorted(root.rglob(GRID_FILE)):
        names = [line.split()[0] for line in grid.read_text().splitlines() if line.strip()]
        missing: dict[str, list[str]] = defaultdict(list)
        for name in names:
            found = grid.parent / name / "records.jsonl"
            if not (found.is_file() and any(r.get("status") == "ok" and not r.get("superseded")
                                            for r in read_records(found))):
                row, _, seed = name.rpartition("/")
                missing[row].append(seed.removeprefix("seed"))
        done = len(names) - sum(map(len, missing.values()))
        lines += [f"`{os.path.relpath(grid, doc.parent)}` ({len(names)} runs): **{done} of {len(names)} recorded**"
                  + (", every run of the grid." if not missing else "; not yet recorded (table/row: seeds):"), ""]
        lines += [f"- {row}: {', '.join(seeds)}" for row, seeds in missing.items()]
        pending |= {row.partition("/")[2] for row in missing}
    if lines:
        lines = ["## Grid progress", "", *lines, ""]
    return lines, pending


def render_results(root: Path, doc: Path, plot_dir: Path, claims: list[dict] | None,
                   paper: dict[str, dict] | None) -> str:
    """Write the "Reference results" page (and its curve plots) from the reference records
    under ``root``; returns the text.

    Raises:
        ConfigError: no reference record (config files ``ref-*.yaml``) under ``root``.
    """
    runs, _ = load_records(root)
    reference = [r for r in runs if is_reference(r) and r.get("kind", "train") == "train"]
    ok = [r for r in reference if r.get("status") == "ok"]
    if not ok:
        raise ConfigError(
            f"report --results: no reference records under {root}: expected records.jsonl files of runs with "
            f"--config_files benchmarks/presets/{REFERENCE_PREFIX}*.yaml (benchmarks/reference.sh writes them)"
        )
    tables = reference_tables(ok)
    presets = sorted({Path(f).name for r in ok for f in r["config_files"]})
    progress, pending = grid_progress(root, doc)
    lines = [
        "# Reference results",
        "",
        *(["**Partial: the grid has not run to the end** (see [Grid progress](#grid-progress)); the tables and",
           "claims hold the rows recorded so far.", ""] if pending else []),
        "Generated by `recbole-attn report RECORDS --results FILE` from the reference-protocol records",
        f"under `{os.path.relpath(root, doc.parent)}` only (runs with the presets {', '.join(presets)});",
        "do not edit by hand. `benchmarks/reference.sh` runs the grid from the public raw data.",
        "",
        "Protocol (named in every table header): leave-one-out in time order; each model with its own",
        "default hyper-parameters; training stops after `stopping_step` validated epochs without a better",
        "validation metric and the best validation epoch is tested. A row is *converged* when early",
        "stopping ended every run before the epoch cap; a row that reached the cap is marked",
        "*not converged*: its metric may still have been rising. A row with one seed shows no ±",
        "and its header says so (\"seeds 1\"). The command beside each row reproduces it from the",
        "repository root.",
        "",
        *overview(tables),
        *progress,
    ]
    if claims:
        lines += ["Papers' claims judged on these tables, beside the papers' own figures: "
                  "[see below](#papers-claims-on-the-reference-results).", ""]
    for name, records in tables.items():
        lines += train_table(name, records, per_row=True)
        for path in plot_curves(name, records, plot_dir):
            lines += ["Learning curves (mean over seeds; past the epoch where a seed stopped early, the mean of "
                      "the seeds still training; the legend counts a row's runs):", "",
                      f"![{path.stem}]({os.path.relpath(path, doc.parent)})", ""]
    if claims:
        lines += claims_lines(claims, paper or {}, tables, pending)
    failed = [r for r in reference if r.get("status") != "ok"]
    if failed:
        lines += ["## Failed runs", "", *[
            f"- {r.get('label') or r['model']} on {r['dataset']}, seed {r['seed']}: "
            f"`{(r.get('error') or 'no error text').strip().splitlines()[-1]}`" for r in failed], ""]
    text = "\n".join(lines)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return text
