"""The results history: a SQLite database in the user's data folder, listed and compared."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgert.bundle import Bundle
from edgert.cli import main
from edgert.device import results
from edgert.device.local import LocalDevice
from edgert.device.profiler import ProfileOptions, profile


@pytest.fixture(scope="module")
def real_report(tiny_bundle) -> dict:
    """One real profile (JSON form) of the tiny bundle on this machine."""
    return profile(Bundle.open(tiny_bundle("host")), LocalDevice(), ProfileOptions(warmup=2, repeat=30)).to_json()


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EDGERT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_database_lives_in_the_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGERT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert results.database_path() == tmp_path / "xdg" / "edgert" / "results.sqlite"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert results.database_path() == tmp_path / "home" / ".local" / "share" / "edgert" / "results.sqlite"
    monkeypatch.setenv("EDGERT_DATA_DIR", str(tmp_path / "override"))
    assert results.database_path() == tmp_path / "override" / "results.sqlite"


def test_record_list_and_read_back(data, real_report):
    assert "no profiles recorded yet" in results.list_table(results.runs())
    first = results.record(real_report)
    second = results.record(real_report | {"device": "qemu"})
    assert (first, second) == (1, 2)
    assert (data / "results.sqlite").is_file()
    rows = results.runs()
    assert [r.id for r in rows] == [2, 1] and [r.device for r in rows] == ["qemu", "local"]  # newest first
    assert rows[1].median_ms == real_report["latency"]["median_ms"] and rows[1].mj_per_inference is None
    assert rows[1].label == "tiny.host" and rows[1].peak_kb == real_report["memory"]["vm_hwm_kb"]
    assert results.report(first) == real_report  # the whole report is kept
    assert [r.id for r in results.runs(limit=1)] == [2]
    table = results.list_table(rows).splitlines()
    assert table[0].startswith("id") and "median ms" in table[0] and table[1].startswith("2 ") and "tiny.host" in table[2]


def test_compare_puts_runs_side_by_side_with_ratios(data, real_report):
    int8 = copy.deepcopy(real_report)
    int8["bundle"] |= {"label": "tiny.int8", "compression": "quantize"}
    int8["latency"]["median_ms"] = real_report["latency"]["median_ms"] / 2
    int8["energy"] = {"rails": [{"name": "VDD_IN", "joules_per_inference": 0.002}]}
    ids = [results.record(real_report), results.record(int8)]
    text = results.compare_table({i: results.report(i) for i in ids})
    rows = {ln.split("  ")[0].strip(): ln for ln in text.splitlines()}
    assert "tiny.host" in rows["label"] and "tiny.int8" in rows["label"] and "quantize" in rows["compression"]
    assert rows["median ms"].endswith("(0.50x)")
    assert rows["mJ/inference"].split()[-1] == "2" and "-" in rows["mJ/inference"]


def test_results_command(data, real_report):
    runner = CliRunner()
    empty = runner.invoke(main, ["results"])
    assert empty.exit_code == 0 and "no profiles recorded yet" in empty.stdout
    results.record(real_report)
    results.record(real_report)
    listing = runner.invoke(main, ["results"])
    assert listing.exit_code == 0 and len(listing.stdout.splitlines()) == 3
    both = runner.invoke(main, ["results", "--compare", "1", "2"])
    assert both.exit_code == 0 and "#1" in both.stdout and "(1.00x)" in both.stdout
    one = runner.invoke(main, ["results", "1"])
    assert one.exit_code == 0 and "latency     median" in one.stdout
    for args, needle in ((["results", "7"], "no run with id 7"), (["results", "--compare", "1"], "two or more run ids")):
        r = runner.invoke(main, args)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 1 and len(lines) == 1 and needle in lines[0] and "edgert results" in lines[0]


def test_an_unwritable_data_folder_says_how_to_fix_it(tmp_path, monkeypatch, real_report):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EDGERT_DATA_DIR", str(blocker / "data"))
    with pytest.raises(results.ResultsError, match="EDGERT_DATA_DIR"):
        results.record(real_report)

