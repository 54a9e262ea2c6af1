"""Papers' claims (a YAML claims file) judged on a report's tables: row ``better`` is
claimed to beat row ``worse`` on a metric; the verdict compares the difference of the
means over seeds with their stds (``judge``). Used by ``recbole-attn report`` and its
"Reference results" page (``recbole_attn.benchmark.report``, ``results``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from recbole_attn.benchmark.summary import _fmt, smaller_is_better, summarise


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
