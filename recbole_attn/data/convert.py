"""Converters from two public raw formats to RecBole atomic files.

- S3Rec (``convert_s3rec``): ``<Name>.txt`` with one line a user, ``user item item ...``
  in time order without timestamps, plus ``<Name>_item2attributes.json``
  (``{"item": [attribute ids]}``), as preprocessed for the S3Rec paper (Amazon Beauty,
  Toys_and_Games, LastFM). Written as ``<name>.inter`` (``user_id:token item_id:token
  timestamp:float``, the timestamp being the item's position 0, 1, 2, ... in the user's
  sequence) and ``<name>.item`` (``item_id:token categories:token_seq``, the attribute ids
  separated by spaces; empty for an item without attributes). Only items that occur in the
  sequence file get an ``.item`` row.
- Taobao UserBehavior (``convert_taobao``): csv without header,
  ``user_id,item_id,category_id,behavior_type,timestamp`` with behavior_type in
  pv/cart/fav/buy and Unix timestamps. Written as ``<name>.inter`` (``user_id:token
  item_id:token behavior_type:token timestamp:float``, in input order) and ``<name>.item``
  (``item_id:token category:token``, one row per item).

Ids must be non-negative integers and are written without leading zeros; blank lines are
skipped. Malformed input raises ``ConvertError`` naming the file, the 1-based line and what
was expected. Outputs go to ``<out_dir>/<name>/`` under temporary names and are moved into
place only once every output is complete: a failed conversion leaves nothing behind.

Command line: ``recbole-attn convert s3rec --seq F --attributes F --name beauty --out DIR``
and ``recbole-attn convert taobao --csv F --out DIR [--name taobao]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import secrets
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from recbole_attn.errors import ConfigError

BEHAVIOR_TYPES = ("pv", "cart", "fav", "buy")
S3REC_INTER_HEADER = ("user_id:token", "item_id:token", "timestamp:float")
S3REC_ITEM_HEADER = ("item_id:token", "categories:token_seq")
TAOBAO_INTER_HEADER = ("user_id:token", "item_id:token", "behavior_type:token", "timestamp:float")
TAOBAO_ITEM_HEADER = ("item_id:token", "category:token")
TAOBAO_COLUMNS = "user_id,item_id,category_id,behavior_type,timestamp"

_ID = re.compile(r"[0-9]+")
_TIMESTAMP = re.compile(r"-?[0-9]+")

StrPath = str | os.PathLike


class ConvertError(ConfigError):
    """Malformed raw input (or an unusable dataset name); the message names file and line."""


def _error(path: StrPath, line: int | None, message: str) -> ConvertError:
    where = f"{os.fspath(path)}, line {line}" if line is not None else os.fspath(path)
    return ConvertError(f"{where}: {message}")


@dataclass
class Report:
    """What a conversion wrote: the dataset folder, (file, data rows) pairs and notes."""

    folder: Path
    files: list[tuple[Path, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- reading


def _lines(path: StrPath) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without line ending) of each non-blank UTF-8 line."""
    try:
        f = open(path, "rb")
    except OSError as err:
        raise _error(path, None, f"cannot read the file ({err.strerror})") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                message = f"expected UTF-8 text ({err.reason} at byte {err.start})"
                raise _error(path, lineno, message) from None
            if lineno == 1:
                text = text.removeprefix("\ufeff")
            text = text.rstrip("\r\n")
            if text.strip():
                yield lineno, text


def _parse_id(token: str, path: StrPath, line: int, what: str) -> int:
    if not _ID.fullmatch(token):
        raise _error(path, line, f"expected an integer {what}, got {token!r}")
    return int(token)


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _line_of(text: str, key: str, occurrence: int = 1) -> int:
    """Line of the ``occurrence``-th appearance of ``key`` as a JSON string (1 if not found)."""
    needle, pos = json.dumps(key), -1
    for _ in range(occurrence):
        pos = text.find(needle, pos + 1)
        if pos < 0:
            return 1
    return text.count("\n", 0, pos) + 1


def read_item_attributes(path: StrPath) -> dict[int, list[int]]:
    """S3Rec's ``{"item": [attribute ids]}`` JSON as item id -> attribute ids."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise _error(path, None, f"cannot read the file ({err.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise _error(path, line, f"expected UTF-8 text ({err.reason})") from None
    expected = 'expected a JSON object {"item id": [attribute ids, ...]}'
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as err:
        raise _error(path, err.lineno, f"{expected}: invalid JSON, {err.msg} (column {err.colno})") from None
    except _DuplicateKey as dup:
        line = _line_of(text, dup.key, occurrence=2)
        raise _error(path, line, f"expected each item once, but key {dup.key!r} appears twice") from None
    if not isinstance(data, dict):
        raise _error(path, 1, f"{expected}, got a JSON {type(data).__name__}")
    out: dict[int, list[int]] = {}
    for key, value in data.items():  # the line of a key is looked up only for an error
        if not _ID.fullmatch(key):
            raise _error(path, _line_of(text, key), f"expected an integer item id as key, got {key!r}")
        item = int(key)
        if item in out:
            message = f"expected each item once, but item {item} appears twice (as {key!r})"
            raise _error(path, _line_of(text, key), message)
        if not isinstance(value, list) or not all(
            isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in value
        ):
            raise _error(
                path,
                _line_of(text, key),
                f"item {key!r}: expected a list of non-negative integer attribute ids, "
                f"got {json.dumps(value)[:80]}",
            )
        out[item] = value
    return out


# ---------------------------------------------------------------- writing


class _Table:
    """One output file being written under a temporary name."""

    def __init__(self, final: Path, header: Sequence[str]):
        self.final = final
        self.temp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
        self.handle: IO[str] = open(self.temp, "x", encoding="utf-8", newline="\n")
        self.rows = 0
        self.handle.write("\t".join(header) + "\n")

    def write(self, *fields: object) -> None:
        self.handle.write("\t".join(map(str, fields)) + "\n")
        self.rows += 1


class _Outputs:
    """Tables in one folder, moved into place together on success and removed on error.

    Folders it had to create are removed again on error.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.tables: list[_Table] = []
        self._created: list[Path] = []

    def __enter__(self) -> _Outputs:
        missing, p = [], self.folder
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            for d in reversed(missing):
                try:
                    d.mkdir()
                except FileExistsError:
                    continue
                self._created.append(d)
        except BaseException:
            self._abort()
            raise
        return self

    def table(self, filename: str, header: Sequence[str]) -> _Table:
        t = _Table(self.folder / filename, header)
        self.tables.append(t)
        return t

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            for t in self.tables:
                t.handle.close()
            for t in self.tables:
                os.replace(t.temp, t.final)
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        for t in self.tables:
            t.handle.close()
            t.temp.unlink(missing_ok=True)
        for d in reversed(self._created):
            try:
                d.rmdir()
            except OSError:
                pass


def _dataset_folder(out_dir: StrPath, name: str) -> Path:
    if not name or name in {".", ".."} or "/" in name or "\\" in name or name.strip() != name:
        raise ConvertError(f"dataset name {name!r}: expected a plain folder name such as 'beauty'")
    return Path(out_dir) / name


# ---------------------------------------------------------------- converters


def s3rec(seq_file: StrPath, attr_file: StrPath, out_dir: StrPath, name: str) -> Report:
    """``convert_s3rec`` with a report of the rows written."""
    folder = _dataset_folder(out_dir, name)
    attributes = read_item_attributes(attr_file)
    users: dict[int, int] = {}
    items: set[int] = set()
    with _Outputs(folder) as out:
        inter = out.table(f"{name}.inter", S3REC_INTER_HEADER)
        for lineno, text in _lines(seq_file):
            tokens = text.split()
            if len(tokens) < 2:
                raise _error(
                    seq_file, lineno, "expected 'user item [item ...]' (a user id and at least one item id, "
                    f"space separated), got only {tokens[0]!r}"
                )
            user = _parse_id(tokens[0], seq_file, lineno, "user id (field 1)")
            if user in users:
                raise _error(
                    seq_file,
                    lineno,
                    f"expected one line per user, but user {user} is also on line {users[user]}",
                )
            users[user] = lineno
            for position, token in enumerate(tokens[1:]):
                item = _parse_id(token, seq_file, lineno, f"item id (field {position + 2})")
                items.add(item)
                inter.write(user, item, position)
        if not users:
            raise _error(seq_file, None, "expected at least one line 'user item [item ...]', found none")
        item_table = out.table(f"{name}.item", S3REC_ITEM_HEADER)
        for item in sorted(items):
            item_table.write(item, " ".join(map(str, attributes.get(item, ()))))
    report = Report(folder, [(t.final, t.rows) for t in out.tables])
    without = len(items - attributes.keys())
    unused = len(attributes.keys() - items)
    if without:
        report.notes.append(f"{without} of {len(items)} items have no attributes entry (empty categories)")
    if unused:
        report.notes.append(f"{unused} attribute entries are for items not in {os.fspath(seq_file)}: skipped")
    return report


def taobao(
    csv_file: StrPath, out_dir: StrPath, name: str = "taobao", category_conflict: str = "error"
) -> Report:
    """``convert_taobao`` with a report of the rows written."""
    if category_conflict not in ("error", "first"):
        raise ValueError(f"category_conflict must be 'error' or 'first', got {category_conflict!r}")
    folder = _dataset_folder(out_dir, name)
    categories: dict[int, tuple[int, int]] = {}  # item -> (category, line first seen)
    conflicts: set[int] = set()
    with _Outputs(folder) as out:
        inter = out.table(f"{name}.inter", TAOBAO_INTER_HEADER)
        for lineno, text in _lines(csv_file):
            try:
                row = next(csv.reader([text], strict=True))
            except csv.Error as err:
                message = f"expected comma-separated columns {TAOBAO_COLUMNS}: {err}"
                raise _error(csv_file, lineno, message) from None
            if len(row) != 5:
                raise _error(
                    csv_file, lineno, f"expected 5 comma-separated columns {TAOBAO_COLUMNS}, got {len(row)}"
                )
            user = _parse_id(row[0], csv_file, lineno, "user_id (column 1)")
            item = _parse_id(row[1], csv_file, lineno, "item_id (column 2)")
            category = _parse_id(row[2], csv_file, lineno, "category_id (column 3)")
            behavior, timestamp = row[3], row[4]
            if behavior not in BEHAVIOR_TYPES:
                raise _error(
                    csv_file,
                    lineno,
                    f"expected behavior_type (column 4) one of {', '.join(BEHAVIOR_TYPES)}, got {behavior!r}",
                )
            if not _TIMESTAMP.fullmatch(timestamp):
                message = f"expected an integer Unix timestamp (column 5), got {timestamp!r}"
                raise _error(csv_file, lineno, message)
            first = categories.setdefault(item, (category, lineno))
            if first[0] != category:
                if category_conflict == "error":
                    raise _error(
                        csv_file, lineno, f"expected one category per item, but item {item} has category "
                        f"{category} here and category {first[0]} on line {first[1]}"
                    )
                conflicts.add(item)
            inter.write(user, item, behavior, int(timestamp))
        if not categories:
            raise _error(csv_file, None, f"expected at least one line {TAOBAO_COLUMNS}, found none")
        item_table = out.table(f"{name}.item", TAOBAO_ITEM_HEADER)
        for item in sorted(categories):
            item_table.write(item, categories[item][0])
    report = Report(folder, [(t.final, t.rows) for t in out.tables])
    if conflicts:
        report.notes.append(
            f"{len(conflicts)} of {len(categories)} items appear with more than one category; "
            "kept the first: "
            + ", ".join(map(str, sorted(conflicts)[:10]))
        )
    return report


def convert_s3rec(seq_file: StrPath, attr_file: StrPath, out_dir: StrPath, name: str) -> Path:
    """Convert an S3Rec sequence file and its item2attributes JSON; returns ``out_dir/name``.

    Raises:
        ConvertError: malformed input; nothing is written.
    """
    return s3rec(seq_file, attr_file, out_dir, name).folder


def convert_taobao(
    csv_file: StrPath, out_dir: StrPath, name: str = "taobao", *, category_conflict: str = "error"
) -> Path:
    """Convert a Taobao UserBehavior csv; returns ``out_dir/name``.

    ``category_conflict="first"`` keeps an item's first category instead of raising when
    the item appears with another one (the real UserBehavior data has such items).

    Raises:
        ConvertError: malformed input; nothing is written.
    """
    return taobao(csv_file, out_dir, name, category_conflict).folder


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recbole-attn convert",
        description="Convert a public raw dataset to RecBole atomic files in OUT/NAME/.",
    )
    sub = p.add_subparsers(dest="format", required=True, metavar="{s3rec,taobao}")
    s = sub.add_parser("s3rec", help="S3Rec's <Name>.txt + <Name>_item2attributes.json")
    s.add_argument("--seq", required=True, help="sequence file: 'user item item ...' a line")
    s.add_argument("--attributes", required=True, help='item2attributes JSON: {"item": [attribute ids]}')
    s.add_argument("--name", required=True, help="dataset name, e.g. beauty, toys, lastfm")
    s.add_argument("--out", required=True, help="folder that receives NAME/NAME.inter and NAME.item")
    t = sub.add_parser("taobao", help="Taobao UserBehavior csv")
    t.add_argument("--csv", required=True, help=f"csv without header: {TAOBAO_COLUMNS}")
    t.add_argument("--out", required=True, help="folder that receives NAME/NAME.inter and NAME.item")
    t.add_argument("--name", default="taobao", help="dataset name (default: taobao)")
    t.add_argument(
        "--category-conflict",
        choices=("error", "first"),
        default="error",
        help="an item seen with two categories: fail (default) or keep the first",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``recbole-attn convert ...``: prints each written file and its row count; 2 on bad input."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.format == "s3rec":
            report = s3rec(args.seq, args.attributes, args.out, args.name)
        else:
            report = taobao(args.csv, args.out, args.name, args.category_conflict)
    except ConvertError as err:
        print(f"recbole-attn: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"recbole-attn: error: cannot write {args.out}: {err}", file=sys.stderr)
        return 1
    for path, rows in report.files:
        print(f"wrote {path}: {rows} rows")
    for note in report.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
