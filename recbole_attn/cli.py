"""Command line: ``recbole-attn [run] --model=M --dataset=D [--key=value | key=value ...]``.

Subcommands: ``run`` (the default), ``convert {s3rec,taobao} ...`` (raw data to atomic
files, ``recbole_attn.data.convert``), ``benchmark`` (models x seeds, one record per run,
``recbole_attn.benchmark.runner``) and ``report DIR`` (tables and plots from records,
``recbole_attn.benchmark.report``).

Takes RecBole's ``run_recbole.py`` arguments (``--model --dataset --config_files --nproc
--world_size --ip --port --group_offset``), plus ``--ranker=M`` for a re-ranker (PRM):
train ranker M first on the same split, then the re-ranker on M's checkpoint. Every other
``--key=value`` (or bare ``key=value``) overrides a config key, as on RecBole's command line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from recbole_attn.config import ConfigError


def _subcommand_list() -> str:
    return "\n".join(f"  {name:<10} {(entry[2:] or ('',))[0]}" for name, entry in SUBCOMMANDS.items())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recbole-attn [run]",
        usage="recbole-attn [run] [--model M] [--dataset D] [--config_files \"A.yaml B.yaml\"] [key=value ...]\n"
        "       recbole-attn {convert,benchmark,report} --help",
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
    return p


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
    # RecBole's Config reads --key=value from sys.argv, here and in spawned processes.
    sys.argv = [sys.argv[0]] + overrides
    from recbole_attn.quick_start import run, run_with_ranker

    if args.ranker:
        if args.nproc != 1 or args.world_size > 0:
            raise ConfigError("--ranker runs on one process: drop --nproc/--world_size")
        run_with_ranker(
            args.model,
            args.dataset,
            args.ranker,
            config_file_list=args.config_files.split() if args.config_files else None,
        )
        return 0

    run(
        args.model,
        args.dataset,
        config_file_list=args.config_files.split() if args.config_files else None,
        nproc=args.nproc,
        world_size=args.world_size,
        ip=args.ip,
        port=args.port,
        group_offset=args.group_offset,
    )
    return 0


# Subcommand -> (module, function, one-line help); imported only when used.
SUBCOMMANDS = {
    "run": ("recbole_attn.cli", "run_main", "train and test a model (the default subcommand)"),
    "convert": ("recbole_attn.data.convert", "main", "raw public data (s3rec, taobao) to RecBole atomic files"),
    "benchmark": ("recbole_attn.benchmark.runner", "benchmark_main", "models x seeds, one JSON record per run"),
    "report": ("recbole_attn.benchmark.report", "report_main", "tables and plots from benchmark records"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "run"
    module, function = SUBCOMMANDS[name][:2]
    command = getattr(importlib.import_module(module), function)
    try:
        return command(argv)
    except ConfigError as err:
        print(f"recbole-attn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
