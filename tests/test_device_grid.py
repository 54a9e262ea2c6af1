"""benchmarks/device-grid.sh and reference.sh's DEADLINE, with a stand-in for recbole-attn."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

from conftest import REPO

SCRIPT = str(REPO / "benchmarks" / "device-grid.sh")
# records a run in its --out folder unless one is there (as --resume skips a recorded run)
FAKE = """#!/usr/bin/env bash
[ "$1" = benchmark ] || exit 9
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
[ -f "$out/records.jsonl" ] && exit 0
sleep "${FAKE_SLEEP:-0}"
mkdir -p "$out"; echo "{\\"status\\": \\"ok\\", \\"out\\": \\"$(basename "$(dirname "$out")")/$(basename "$out")\\"}" >> "$out/records.jsonl"
"""


def _env(tmp_path, **extra) -> dict:
    fake = tmp_path / "fake-recbole-attn"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    return {**os.environ, "RECBOLE_ATTN": str(fake), "GPU": "False", "PYTHON": sys.executable,
            "WHEELS": str(tmp_path / "no-wheels"), "ONLY": "^ml-100k/SASRec/", **extra}


def _run(args, env):
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=env, cwd=REPO)


def test_a_lease_packs_only_its_records_and_collect_adds_them_once(tmp_path):
    device, here, back = tmp_path / "device", tmp_path / "here", tmp_path / "back"
    seed1 = "ml-100k/SASRec/seed1/records.jsonl"
    for root in (device, here):  # recorded before the lease, on both sides
        (root / seed1).parent.mkdir(parents=True)
        (root / seed1).write_text('{"status": "ok", "before": true}\n')
    back.mkdir()
    lease = _run(["run", "100"], _env(tmp_path, RECORDS=str(device), OUT=str(back)))
    assert lease.returncode == 0, lease.stderr
    with tarfile.open(back / "ref-records.tgz") as tgz:
        names = {n.removeprefix("./") for n in tgz.getnames()}
    assert {"ml-100k/SASRec/seed2/records.jsonl", "ml-100k/SASRec/seed3/records.jsonl", "grid.txt"} <= names
    assert seed1 not in names  # not written by this lease
    collect = _run(["collect", str(back / "ref-records.tgz")], _env(tmp_path, RECORDS=str(here)))
    assert collect.returncode == 0 and "2 record(s) added" in collect.stdout, collect.stdout + collect.stderr
    assert (here / seed1).read_text() == '{"status": "ok", "before": true}\n'  # nothing replaced
    assert (here / "ml-100k/SASRec/seed2/records.jsonl").read_text().count('"ok"') == 1
    assert len((here / "grid.txt").read_text().split()) == 76  # the CPU grid's jobs
    again = _run(["collect", str(back / "ref-records.tgz")], _env(tmp_path, RECORDS=str(here)))
    assert "0 record(s) added" in again.stdout
    assert (here / "ml-100k/SASRec/seed2/records.jsonl").read_text().count('"ok"') == 1


def test_deadline_starts_no_job_after_it(tmp_path):
    env = _env(tmp_path, OUT=str(tmp_path / "out"), JOBS="1")
    ref = str(REPO / "benchmarks" / "reference.sh")
    none = subprocess.run(["bash", ref], capture_output=True, text=True, env={**env, "DEADLINE": "0"})
    assert none.returncode == 0 and "with 3 job(s) not started; rerun to go on" in none.stdout, none.stdout
    assert not list((tmp_path / "out").glob("ml-100k/SASRec/*/records.jsonl"))
    done = subprocess.run(["bash", ref], capture_output=True, text=True, env={**env, "DEADLINE": "600"})
    assert done.returncode == 0 and len(list((tmp_path / "out").glob("ml-100k/SASRec/*/records.jsonl"))) == 3


def test_the_lease_stops_the_jobs_under_way_and_still_packs(tmp_path):
    back = tmp_path / "back"
    back.mkdir()
    env = _env(tmp_path, RECORDS=str(tmp_path / "device"), OUT=str(back), FAKE_SLEEP="60", GRACE="2", JOBS="1")
    # the first job starts (a 60 s run) within the 5 s budget, even on a loaded machine; the
    # lease ends 7 s in: stopped
    lease = _run(["run", "5"], env)
    assert "reference.sh exit 124; 0 records files back" in lease.stdout, lease.stdout + lease.stderr
    with tarfile.open(back / "ref-records.tgz") as tgz:
        assert "./grid.txt" in tgz.getnames()
    assert not list((tmp_path / "device").glob("ml-100k/SASRec/*/records.jsonl"))  # stopped unfinished


def test_run_needs_the_device_folder_and_prepare_names_a_missing_file(tmp_path):
    no_out = _run(["run"], {k: v for k, v in _env(tmp_path).items() if k != "OUT"})
    assert no_out.returncode == 2 and "OUT" in no_out.stderr
    prepare = _run(["prepare", str(tmp_path / "raw")], _env(tmp_path))
    assert prepare.returncode == 2 and "raw/amazon-s3rec/Beauty.txt" in prepare.stderr
    assert _run(["nothing"], _env(tmp_path)).returncode == 2
