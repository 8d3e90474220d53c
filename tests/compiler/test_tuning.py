"""`edgert tune`: records land in the database, resume skips them, compile uses them."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def digits(data_dir):
    # Not a zoo model: the shipped database has no records for it, so counts are ours alone.
    return data_dir / "convnet_tiny.onnx"


def _records(db) -> list[dict]:
    path = db / "database_tuning_record.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_tune_writes_records_resumes_and_compile_uses_them(digits, tmp_path):
    import edgert
    from edgert.compiler.build import CompileOptions
    from edgert.compiler.tuning import TuneOptions, tune

    db = tmp_path / "db"
    logs: list[str] = []
    first = tune(digits, "host", TuneOptions(trials=12, database=db), log=logs.append)
    assert first.measured == 12 and first.failed == 0
    assert "trial budget of 12 reached" in first.stopped
    assert len(_records(db)) == 12
    # Every measured candidate has a positive, finite time.
    for t in first.tasks:
        if t.measured:
            assert 0 < t.best_ms < 1e3 and t.best_ms <= t.default_ms

    # Resuming measures only what is missing: nothing measured twice.
    second = tune(digits, "host", TuneOptions(database=db), log=logs.append)
    assert second.stopped == ""
    assert len(_records(db)) == 12 + second.measured
    assert all(t.measured + t.failed <= t.candidates for t in second.tasks)
    assert sum(t.candidates for t in second.tasks) == len(_records(db))
    third = tune(digits, "host", TuneOptions(database=db), log=logs.append)
    assert third.measured == 0

    bundle = edgert.compile(
        digits, "host", tmp_path / "tuned.edgert", CompileOptions(tuning_db=(db,)), log=logs.append
    )
    sched = bundle.manifest["build"]["schedules"]
    assert sched["tuned"] == len(second.tasks) and sched["naive"] == 0
    assert any(f"schedules: {len(second.tasks)} tuned, 0 edgert default" in line for line in logs), logs
    from edgert.runtime.session import check, run_in_process

    assert all(a.ok for a in check(run_in_process(bundle, bundle.golden_inputs()), bundle))


def test_defaults_only_ignores_database(digits, tmp_path):
    import edgert
    from edgert.compiler.build import CompileOptions

    bundle = edgert.compile(digits, "host", tmp_path / "d.edgert", CompileOptions(schedules="default"), log=lambda _: None)
    sched = bundle.manifest["build"]["schedules"]
    assert sched["tuned"] == 0 and sched["default"] >= 5 and sched["naive"] == 0


def test_tune_refuses_arm_target_without_device(digits, tmp_path):
    from edgert.compiler.tuning import TuneOptions, tune
    from edgert.errors import TuningError

    with pytest.raises(TuningError, match="--device qemu"):
        tune(digits, "rpi4", TuneOptions(database=tmp_path / "db"), log=lambda _: None)
    with pytest.raises(TuningError, match="--trials"):
        tune(digits, "host", TuneOptions(trials=0, database=tmp_path / "db"), log=lambda _: None)


def test_cli_tune_then_compile(digits, tmp_path):
    from click.testing import CliRunner

    from edgert.cli import main

    db = tmp_path / "db"
    r = CliRunner().invoke(main, ["tune", str(digits), "--trials", "4", "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert "4 candidates measured, 0 failed" in r.output
    r = CliRunner().invoke(main, ["compile", str(digits), "--tuning-db", str(db), "-o", str(tmp_path / "b.edgert")])
    assert r.exit_code == 0, r.output
    assert "schedules: 1 tuned, " in r.output and ", 0 naive" in r.output


def test_shipped_database_covers_the_zoo_on_this_cpu_class(tmp_path, monkeypatch):
    import edgert
    from edgert.compiler.targets import load_target
    from edgert.compiler.tuning import class_key, shipped_database_dir
    from edgert.zoo.registry import get

    tgt = load_target("host")
    if shipped_database_dir(tgt) is None:
        from importlib import resources

        shipped = sorted(p.name for p in resources.files("edgert.tuning_db").iterdir() if p.is_dir() and "-v" in p.name)
        pytest.skip(f"edgert ships tuning records for {', '.join(shipped)}; this CPU is {class_key(tgt)}")
    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path / "cache"))  # no user records
    bundle = edgert.compile(get("tcn_kws").onnx_path, "host", tmp_path / "t.edgert", log=lambda _: None)
    sched = bundle.manifest["build"]["schedules"]
    assert sched["default"] == 0 and sched["naive"] == 0 and sched["tuned"] >= 5, sched


@pytest.mark.qemu
def test_tune_on_aarch64_under_qemu_over_rpc(qemu, digits, tmp_path):
    """The device path: the aarch64 runner serves TVM RPC under qemu; records land and compile uses them."""
    import edgert
    from edgert.compiler.build import CompileOptions
    from edgert.compiler.tuning import TuneOptions, tune

    db = tmp_path / "db"
    report = tune(digits, "generic-aarch64", TuneOptions(trials=4, database=db, device="qemu"), log=lambda _: None)
    assert report.measured >= 1 and len(_records(db)) == report.measured
    assert all(0 < t.best_ms < 1e4 for t in report.tasks if t.measured)
    bundle = edgert.compile(digits, "generic-aarch64", tmp_path / "a.edgert", CompileOptions(tuning_db=(db,)), log=lambda _: None)
    assert bundle.manifest["build"]["schedules"]["tuned"] >= 1


def test_candidates_are_timed_at_each_thread_count(digits, tmp_path):
    """Records keep the timings at every thread count (ranked by their mean), in a fresh process."""
    import os
    import subprocess
    import sys

    db = tmp_path / "db"
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    cmd = [sys.executable, "-m", "edgert.cli", "tune", str(digits), "--target", "host", "--trials", "2", "--db", str(db)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    counts = {1, os.cpu_count() or 1}
    repeat = 3  # TuneOptions.repeat
    # A record line is [workload index, [trace, run_secs, target, args]].
    assert [len(r[1][1]) for r in _records(db)] == [repeat * len(counts)] * 2
    p = subprocess.run([*cmd, "--threads", str((os.cpu_count() or 1) + 1)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode != 0 and "each count must be 1.." in p.stderr
