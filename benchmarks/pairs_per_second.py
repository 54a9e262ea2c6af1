"""Benchmark: full-sort scoring speed of a target-item model, in (user, item) pairs per second.

    python benchmarks/pairs_per_second.py --model AttnDIN --dataset ml-100k --users 200

Builds the model (untrained: speed does not depend on the weights) on the dataset's
training split, takes the last training row of ``--users`` distinct users (history,
user, time), puts the model in eval mode and times ``full_sort_predict`` over every item,
``--batch`` users at a time, after one warm-up batch. Prints and writes a JSON record
(``--out``, default ``benchmarks/records/speed/pairs_per_second/``) with the git SHA (and
whether the tree was dirty), torch version, thread count, chunk size and pairs/s.
With ``--labelled``, also times one pass of ``predict`` over the validation rows of
RecBole's labelled protocol (the dataset's eval_args, e.g. positive + 100 negatives per
user). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="AttnDIN")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--users", type=int, default=200, help="distinct users scored [>=1]")
    parser.add_argument("--batch", type=int, default=50, help="users per full_sort_predict call [>=1]")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=None, help="full_sort_chunk (default: the model's YAML)")
    parser.add_argument("--labelled", action="store_true", help="also time predict over the validation rows")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "records" / "speed" / "pairs_per_second"))
    args = parser.parse_args()

    import torch
    from recbole.data.interaction import Interaction

    import recbole_attn  # noqa: F401
    from recbole_attn.config import Config
    from recbole_attn.quick_start import prepare

    # RecBole's sequential dataset: the users' last rows are read from its inter_feat with their
    # histories (a lean dataset gathers them per batch); only scoring is timed.
    overrides = {"torch_threads": args.threads, "device": "cpu", "use_gpu": False, "show_progress": False,
                 "sequential_dataset": "recbole"}
    if args.chunk is not None:
        overrides["full_sort_chunk"] = args.chunk
    config = Config(model=args.model, dataset=args.dataset, config_dict=overrides)
    torch.set_num_threads(args.threads)
    _, train_data, valid_data, _, model, _ = prepare(config, log=False, with_trainer=False)
    torch.set_num_threads(args.threads)
    feat = train_data._dataset.inter_feat
    users = feat[model.USER_ID]
    last = {}
    for row, user in enumerate(users.tolist()):
        last[user] = row  # the last (longest-history) row of each user
    rows = torch.tensor(list(last.values())[: args.users])
    batch = Interaction({k: v[rows] for k, v in feat.interaction.items()})
    model.eval()
    n_items = model.n_items
    with torch.no_grad():
        model.full_sort_predict(batch[: min(args.batch, len(batch))])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(batch), args.batch):
            model.full_sort_predict(batch[i : i + args.batch])
        seconds = time.perf_counter() - start
        labelled = None
        if args.labelled:
            batches = [b[0] if isinstance(b, tuple) else b for b in valid_data]
            start = time.perf_counter()
            for rows_ in batches:
                model.predict(rows_)
            labelled = {"rows": sum(len(b) for b in batches), "seconds": round(time.perf_counter() - start, 3)}
    pairs = len(batch) * n_items
    record = {
        "benchmark": "pairs_per_second",
        "model": args.model,
        "dataset": args.dataset,
        "users": len(batch),
        "items": n_items,
        "batch": args.batch,
        "full_sort_chunk": model.full_sort_chunk,
        "mean_history": float(batch[model.ITEM_SEQ_LEN].float().mean()),
        "seconds": round(seconds, 3),
        "pairs_per_second": round(pairs / seconds, 1),
        "labelled_eval": labelled,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_sha": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(json.dumps(record, indent=1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{args.model}-{args.dataset}-{record['git_sha'][:8]}-{int(time.time())}.json"
    (out / name).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
