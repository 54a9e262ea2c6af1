"""docs/explain.md: one ml-100k user's attention explanations from every attention model.

    OMP_NUM_THREADS=1 python benchmarks/explain_cases.py [--user 1] [--k 5]
    OMP_NUM_THREADS=1 python benchmarks/explain_cases.py --epochs 1 [--model-epochs AttRec=3]
    OMP_NUM_THREADS=1 python benchmarks/explain_cases.py --jobs 2   # two trainings at a time (2 cores)

Trains each model on ml-100k with the README's command, one run at a time: by default
exactly ``python run_recbole_attn.py --model=M --dataset=ml-100k`` (the model's own
configuration, early stopping on the validation metric); with ``--epochs`` the CPU preset
of its kind for that fixed budget instead (minutes, not converged). PRM re-ranks the
AttRec trained here. A rerun reuses the finished checkpoints under ``--checkpoints``, so
an interrupted run goes on where it stopped. ``--jobs N`` trains N models at a time (PRM once
its AttRec is trained), each training's output in ``<checkpoints>/<Model>/.../train.out``. Then ``recbole-attn explain`` writes the JSON
and PNGs under docs/img/explain/ and this script writes docs/explain.md around them.

Across sessions (checkpoints lost): ``--models AttRec,PRM`` trains and explains only those
and keeps every other model's section. Each model's section is rebuilt from its files in
docs/img/explain/: the explanation JSON and ``<Model>-user<U>.case.json`` (the command that
trained it, its budget, the git commit), so the page always says per model which budget
its pictures come from.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from recbole_attn.benchmark.environment import git_sha

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "benchmarks" / "presets"
MODELS = {  # model -> preset (README: benchmarks/presets/cpu-*.yaml)
    "AttnDIN": "cpu-ctr-ml-100k.yaml",
    "AttnDIEN": "cpu-ctr-ml-100k.yaml",
    "BST": "cpu-ctr-ml-100k.yaml",
    "ATRank": "cpu-ctr-ml-100k.yaml",
    "NOVABERT": "cpu-ml-100k.yaml",
    "AttnBERT4Rec": "cpu-ml-100k.yaml",
    "AttRec": "cpu-ml-100k.yaml",
    "PRM": "cpu-prm-ml-100k.yaml",
}
ORDER = ["AttRec", "AttnDIN", "AttnDIEN", "BST", "ATRank", "NOVABERT", "AttnBERT4Rec", "PRM"]  # PRM after its ranker


def train(model: str, epochs: int | None, ckpt: Path, ranker: Path | None = None,
          quiet: bool = False) -> tuple[Path, str, str]:
    """Train ``model`` unless its folder holds a checkpoint; (checkpoint, its budget in words, the command).

    ``epochs`` None: the README's command as it is; else the CPU preset for ``epochs`` epochs.
    ``ranker``: PRM's ranker checkpoint (the AttRec trained by this run). ``quiet``: the
    training's output goes to ``train.out`` in its folder (trainings run side by side).
    """
    from recbole_attn.trainer import load_checkpoint

    folder = ckpt / model / ("readme" if epochs is None else f"epochs{epochs}")
    folder.mkdir(parents=True, exist_ok=True)
    cmd = ["python", "run_recbole_attn.py", f"--model={model}", "--dataset=ml-100k"]
    if epochs is not None:
        cmd += [f"--config_files=benchmarks/presets/{MODELS[model]}", f"epochs={epochs}"]
    cmd += [f"checkpoint_dir={folder}"]
    if model == "PRM":
        cmd += [f"ranker_checkpoint={ranker}", "trust_checkpoint=True"]
    last = sorted(folder.glob("*-last.pth"))  # an unfinished training: resumed where it stopped
    if last or not list(folder.glob(f"{model}-*.pth")):
        run = [sys.executable, *cmd[1:], *[f"--resume={p}" for p in last[-1:]]]
        if quiet:
            with open(folder / "train.out", "a") as log:
                subprocess.run(run, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
        else:
            subprocess.run(run, cwd=REPO, check=True)
    shown = [c if not c.startswith(("checkpoint_dir=", "ranker_checkpoint=")) else c.split("=")[0] + "=..." for c in cmd]
    path = newest(folder)
    saved = load_checkpoint(str(path), map_location="cpu")
    return path, budget(saved["config"], int(saved["epoch"]) + 1, epochs is not None), shlex.join(shown)


def budget(config, best_epoch: int, fixed: bool) -> str:
    """The training budget of a checkpoint in words (its best validation epoch, 1-based)."""
    cap, patience, step = int(config["epochs"]), int(config["stopping_step"]), int(config["eval_step"] or 1)
    if fixed:
        return f"{cap} epoch(s), fixed (not converged)"
    # RecBole stops at the (patience + 1)-th validation without improvement after the best
    stopped = best_epoch + (patience + 1) * step <= cap  # early stopping came before the cap
    return (f"early stopping (patience {patience}, cap {cap}), best validation epoch {best_epoch}"
            + ("" if stopped else ", cap reached: not converged"))


def newest(folder: Path) -> Path:
    found = sorted((p for p in folder.glob("*.pth") if not p.stem.endswith("-last")), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no checkpoint in {folder}")
    return found[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=None,
                   help="a fixed budget with the CPU preset of each model's kind (default: the README's command)")
    p.add_argument("--model-epochs", default="", help="per-model budgets overriding --epochs: AttRec=3,AttnDIN=3")
    p.add_argument("--user", default="1")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--checkpoints", default="saved/explain", help="where the trained checkpoints go")
    p.add_argument("--models", default=",".join(ORDER), help="the models to train and explain; '' rebuilds the page only")
    p.add_argument("--jobs", type=int, default=1, help="trainings at a time (one torch thread each: OMP_NUM_THREADS=1)")
    args = p.parse_args()
    out = REPO / "docs" / "img" / "explain"
    ckpt = (REPO / args.checkpoints).resolve()
    per_model = {m: int(n) for m, n in (kv.split("=") for kv in args.model_epochs.split(",") if kv)}
    if per_model and args.epochs is None:
        p.error("--model-epochs needs --epochs (the fixed-budget mode)")
    models = [m for m in ORDER if m in args.models.split(",")]
    if "PRM" in models and "AttRec" not in models:
        p.error("PRM re-ranks the AttRec of this run: name AttRec in --models too")
    sha, dirty = git_sha(REPO)  # the code the trainings run, before this run writes docs/
    epochs = {m: per_model.get(m, args.epochs) for m in models}  # None: the README's command
    trained = train_all(models, args.jobs, lambda m, ranker: train(m, epochs[m], ckpt, ranker, quiet=args.jobs > 1))
    for model in models:
        path, budget_words, command = trained[model]
        subprocess.run([sys.executable, "-m", "recbole_attn.cli", "explain", str(path), "--user", args.user,
                        "--k", str(args.k), "--out", str(out), "--held-out"], cwd=REPO, check=True)
        case = {"model": model, "user": args.user, "k": args.k, "command": command, "budget": budget_words,
                "fixed": epochs[model] is not None, "git_sha": sha[:10], "git_dirty": dirty}
        case_path(out, model, args.user).write_text(json.dumps(case, indent=1) + "\n")
    (REPO / "docs" / "explain.md").write_text(page(args, load_cases(out, args.user, args.k)))
    return 0


def case_path(out: Path, model: str, user: str) -> Path:
    return out / f"{model}-user{user}.case.json"


def load_cases(out: Path, user: str, k: int) -> list[tuple[dict, dict]]:
    """(case, explanation) of every model in ORDER whose files for ``user`` are in ``out``.

    Raises SystemExit when a kept case was made with another ``k`` (its section would not
    match this page's text): rerun that model too (``--models``)."""
    found = []
    for model in ORDER:
        path = case_path(out, model, user)
        if not path.is_file():
            continue
        case = json.loads(path.read_text())
        if case["k"] != k:
            raise SystemExit(f"{path.name} was made with --k {case['k']}, not {k}: add {model} to --models")
        found.append((case, json.loads((out / f"{model}-user{user}.json").read_text())))
    return found


def train_all(models: list[str], jobs: int, train_one) -> dict[str, tuple[Path, str, str]]:
    """``train_one(model, ranker)`` for every model, ``jobs`` at a time; PRM's ranker is the
    AttRec checkpoint, so PRM starts once AttRec's training has ended. A failed training
    raises when its result is read. Returns model -> ``train_one``'s result."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {m: pool.submit(train_one, m, None) for m in models if m != "PRM"}
        if "PRM" in models:  # waits in its own worker; AttRec was submitted first
            futures["PRM"] = pool.submit(lambda: train_one("PRM", futures["AttRec"].result()[0]))
        return {m: futures[m].result() for m in models}


def _name(entry: dict) -> str:
    return entry.get("name") or entry.get("token") or "?"


def section(result: dict, command: str, trained: str) -> str:
    held = result["held_out_item"]
    lines = [f"## {result['model']}", "", f"Trained with `{command}`: {trained}. The last row (rank \"held out\") is the "
             f"user's held-out item, {_name(held)} ({held['token']}).", ""]
    lines.append("| rank | item | score |")
    lines.append("|---|---|---|")
    for e in result["items"]:
        lines.append(f"| {e['rank'] or 'held out'} | {_name(e)} ({e['token']}) | {e['score']:.4g} |")
    lines.append("")
    for a, png in zip(result["attention"], [f for f in result["files"] if f.endswith(".png")]):
        lines += [f"**{a['name']}**: {a['note']}.", "", f"![{result['model']} {a['name']}](img/explain/{png})", ""]
    return "\n".join(lines)


def page(args, cases: list[tuple[dict, dict]]) -> str:
    """docs/explain.md from the (case, explanation) pairs of ``load_cases``; the same files give the same page."""
    readme = [c["model"] for c, _ in cases if not c["fixed"]]
    fixed = [c["model"] for c, _ in cases if c["fixed"]]
    missing = [m for m in ORDER if m not in readme + fixed]
    how = []
    if readme:
        how.append(f"Trained with the README's command (each model's own configuration, early stopping on the "
                   f"validation metric; the budget it reached is under its heading): {', '.join(readme)}.")
    if fixed:
        how.append(f"Trained for a **fixed, short budget** (`epochs=` in the command under its heading) with the CPU "
                   f"preset of its kind (`benchmarks/presets/cpu-*.yaml`), **not converged**: the pictures show what "
                   f"the tool draws, not what a trained model attends to: {', '.join(fixed)}.")
    if missing:
        how.append(f"Not explained yet: {', '.join(missing)}.")
    full = f"OMP_NUM_THREADS=1 python benchmarks/explain_cases.py --user {args.user} --k {args.k} --jobs 2"
    return "\n".join([
        "# Attention explanations: one ml-100k user, every attention model",
        "",
        "Written by `benchmarks/explain_cases.py` (do not edit) from the files in docs/img/explain/: each model's "
        "explanation JSON, PNGs and `<Model>-user<U>.case.json` (the command that trained it, its budget and commit). "
        "`--models M1,M2` retrains and re-explains only those models and keeps the other sections. Every model "
        f"with the README's command, in one run: `{full}`.",
        "",
        *how,
        "",
        "PRM re-ranks the AttRec trained in the same run. The JSON next to each picture "
        "(`docs/img/explain/<Model>-user<U>.json`) holds the ids, raw tokens, names and weights.",
        "",
        f"User {args.user}'s history is the one the model sees for the held-out (test) item; the items are the "
        f"model's top {args.k} (history items excluded) with `predict`'s score, from the forward pass that "
        "recorded the attention (`recbole_attn.explain.capture`). To explain your own checkpoint:",
        "",
        "```bash",
        "recbole-attn explain saved/AttnDIN-<date>.pth --user 1 --items 50,181 --k 10 --out explain/",
        "```",
        "",
        "```python",
        "import recbole_attn",
        "result = recbole_attn.explain('saved/AttnDIN-<date>.pth', user='1', items=['50'], k=10, out_dir='explain/')",
        "```",
        "",
        "The JSON holds `history` (id, raw token, name), `held_out_item`, `items` (rank, `predict`'s score) and "
        "one `attention` entry per picture: `layout` (`target`: one row per scored item; `position`: the "
        "prediction position's row per layer and head; `keys`: query x key), `panels`, `keys` (the real key "
        "positions), `weights` [item rows][panels][queries][keys], `normalised` (weights sum to 1 over the keys), "
        "and for ATRank and PRM `key_notes` (behaviour group; initial -> re-ranked rank) with `sum_by_note`.",
        "",
        *[section(result, case["command"], case["budget"] + f" (commit {case['git_sha']}"
                  + (", with uncommitted changes)" if case.get("git_dirty") else ")")) for case, result in cases],
    ]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
