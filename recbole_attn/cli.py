"""Command line: ``recbole-attn [run] --model=M --dataset=D [--key=value | key=value ...]``.

Subcommands: ``run`` (the default), ``convert {s3rec,taobao} ...`` (raw data to atomic
files, ``recbole_attn.data.convert``), ``benchmark`` (models x seeds, one record per run,
``recbole_attn.benchmark.runner``), ``report DIR`` (tables and plots from records,
``recbole_attn.benchmark.report``) and ``explain CHECKPOINT --user U`` (a user's top-k and
the attention behind each score, ``recbole_attn.explain``).

Takes RecBole's ``run_recbole.py`` arguments (``--model --dataset --config_files --nproc
--world_size --ip --port --group_offset``), plus ``--ranker=M`` for a re-ranker (PRM):
train ranker M first on the same split, then the re-ranker on M's checkpoint, and
``--resume=PATH`` to continue an interrupted run from its ``-last.pth`` checkpoint. Every
other ``--key=value`` (or bare ``key=value``) overrides a config key, as on RecBole's
command line. Ctrl-C exits 130 after printing the run's checkpoints and the resume command.

A bad input (``recbole_attn.errors.ConfigError``: an unknown key, a value out of range,
unusable data or files) ends the command with exit status 2 and one line on stderr;
``--debug`` (anywhere on the command line) prints the traceback too.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import traceback

from recbole_attn.checks import check_processes
from recbole_attn.errors import ConfigError


def _subcommand_list() -> str:
    return "\n".join(f"  {name:<10} {(entry[2:] or ('',))[0]}" for name, entry in SUBCOMMANDS.items())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recbole-attn [run]",
        usage="recbole-attn [run] [--model M] [--dataset D] [--config_files \"A.yaml B.yaml\"] [key=value ...]\n"
        "       recbole-attn {convert,benchmark,report,explain} --help",
        description="Train and test a recbole-attn or RecBole model through RecBole's pipeline.\n\n"
        "subcommands:\n" + _subcommand_list(),
        epilog="Any other --key=value or key=value overrides that config key (e.g. epochs=5). "
        "'recbole-attn SUBCOMMAND --help' describes each subcommand.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", "-m", default="AttRec", help="plugin or built-in model name")
    p.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    p.add_argument(
        "--config_files",
        default=None,
        help='YAML config files, space-separated in one argument (--config_files="a.yaml b.yaml"); later ones win',
    )
    p.add_argument("--nproc", type=int, default=1, help="processes on this machine")
    p.add_argument("--world_size", type=int, default=-1, help="processes on all machines")
    p.add_argument("--ip", default="localhost", help="address of the rank-0 machine")
    p.add_argument("--port", default="5678", help="port of the rank-0 machine")
    p.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    p.add_argument(
        "--ranker",
        default=None,
        help="re-rankers (PRM) only: train this ranker first on the same split, then re-rank its lists",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="PATH",
        help="continue the run of this checkpoint (<name>-last.pth: to the uninterrupted run's result)",
    )
    p.add_argument("--debug", action="store_true", help="on an error, print its traceback too")
    return p


def resume_command(argv: list[str], last: str) -> str:
    """The command line ``argv`` with ``--resume=last`` in place of any earlier ``--resume``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            kept.append(arg)
    return shlex.join(["recbole-attn", *kept, f"--resume={last}"])


def _interrupted(err, argv: list[str], resumable: bool = True) -> int:
    """Print where an interrupted run's checkpoints are and how to resume it; exit code 130."""
    from recbole_attn.trainer import TrainingInterrupted

    lines = ["recbole-attn: interrupted"]
    if isinstance(err, TrainingInterrupted):
        lines.append(f"  best checkpoint: {err.best or 'none yet'}")
        if err.last:
            lines.append(f"  last checkpoint: {err.last} (after epoch {err.last_epoch})")
            if resumable:
                lines.append(f"  resume with: {resume_command(argv, err.last)}")
        else:
            lines.append("  last checkpoint: none yet (no epoch finished); rerun the command to start again")
    print("\n".join(lines), file=sys.stderr)
    return 130


def parse_overrides(extra: list[str]) -> list[str]:
    """``key=value`` / ``--key=value`` arguments as ``--key=value``; anything else is an error."""
    out = []
    for arg in extra:
        body = arg[2:] if arg.startswith("--") else arg
        key, sep, _ = body.partition("=")
        if not sep and arg.endswith((".yaml", ".yml")):
            raise ConfigError(
                f"cannot read argument '{arg}': pass several config files as one quoted, "
                'space-separated argument: --config_files="a.yaml b.yaml"'
            )
        if not sep or not key or body.count("=") != 1:
            raise ConfigError(
                f"cannot read argument '{arg}': write config overrides as key=value "
                "or --key=value (e.g. epochs=1)"
            )
        out.append("--" + body)
    return out


def run_main(argv: list[str]) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    overrides = parse_overrides(extra)
    check_processes(args.nproc, args.world_size)
    # RecBole's Config reads --key=value from sys.argv, here and in spawned processes.
    sys.argv = [sys.argv[0]] + overrides
    from recbole_attn.quick_start import run, run_with_ranker

    if args.ranker:
        if args.nproc != 1 or args.world_size > 0:
            raise ConfigError("--ranker runs on one process: drop --nproc/--world_size")
        if args.resume:
            raise ConfigError("--resume continues one run: resume the ranker's or PRM's run without --ranker")
        try:
            run_with_ranker(
                args.model,
                args.dataset,
                args.ranker,
                config_file_list=args.config_files.split() if args.config_files else None,
            )
        except KeyboardInterrupt as err:
            return _interrupted(err, argv, resumable=False)
        return 0

    try:
        run(
            args.model,
            args.dataset,
            config_file_list=args.config_files.split() if args.config_files else None,
            nproc=args.nproc,
            world_size=args.world_size,
            ip=args.ip,
            port=args.port,
            group_offset=args.group_offset,
            resume=args.resume,
        )
    except KeyboardInterrupt as err:
        return _interrupted(err, argv)
    return 0


# Subcommand -> (module, function, one-line help); imported only when used.
SUBCOMMANDS = {
    "run": ("recbole_attn.cli", "run_main", "train and test a model (the default subcommand)"),
    "convert": ("recbole_attn.data.convert", "main", "raw public data (s3rec, taobao) to RecBole atomic files"),
    "benchmark": ("recbole_attn.benchmark.runner", "benchmark_main", "models x seeds, one JSON record per run"),
    "report": ("recbole_attn.benchmark.report", "report_main", "tables and plots from benchmark records"),
    "explain": ("recbole_attn.explain.api", "explain_main", "a user's top-k and the attention behind each score"),
}


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; a ``ConfigError`` exits 2 with one line (and its traceback with ``--debug``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    name = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "run"
    module, function = SUBCOMMANDS[name][:2]
    command = getattr(importlib.import_module(module), function)
    try:
        return command(argv)
    except ConfigError as err:
        if debug:
            traceback.print_exc()
        print("recbole-attn: error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        return _interrupted(err, argv)


if __name__ == "__main__":
    sys.exit(main())
