"""The results history: every profile appended to a SQLite database in the user's data folder.

``$EDGERT_DATA_DIR/results.sqlite``, else ``$XDG_DATA_HOME/edgert/``, else
``~/.local/share/edgert/``. Each row keeps the headline numbers (for listing and comparing)
and the whole report as JSON (the source of truth; columns are a view of it).
"""
from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from edgert.errors import EdgertError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    label TEXT NOT NULL,
    model TEXT NOT NULL,
    target TEXT NOT NULL,
    compression TEXT NOT NULL,
    device TEXT NOT NULL,
    arch TEXT NOT NULL,
    median_ms REAL NOT NULL,
    p90_ms REAL NOT NULL,
    cold_ms REAL NOT NULL,
    peak_kb INTEGER,
    mj_per_inference REAL,
    report TEXT NOT NULL
)
"""


class ResultsError(EdgertError):
    """The results database cannot be opened, or a run id is unknown."""


@dataclass(frozen=True)
class RunRow:
    id: int
    created: str
    label: str
    model: str
    target: str
    compression: str
    device: str
    arch: str
    median_ms: float
    p90_ms: float
    cold_ms: float
    peak_kb: int | None
    mj_per_inference: float | None


def data_dir() -> Path:
    override = os.environ.get("EDGERT_DATA_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg, "edgert")


def database_path() -> Path:
    return data_dir() / "results.sqlite"


def _connect() -> sqlite3.Connection:
    path = database_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30)
        conn.execute(_SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise ResultsError(f"cannot open the results database {path}: {exc}; "
                           "set EDGERT_DATA_DIR to a writable folder") from None
    return conn


def record(report: dict) -> int:
    """Append one profile report (its JSON form); returns its id."""
    from edgert.device.views import peak_kib

    peak = peak_kib(report["memory"])
    rails = (report.get("energy") or {}).get("rails") or []
    # The first rail is the headline figure: targets list the total (input) rail first.
    mj = rails[0]["joules_per_inference"] * 1e3 if rails else None
    b, lat = report["bundle"], report["latency"]
    row = (report["created"], b["label"], b["model"], b["target"], b["compression"], report["device"], report["arch"],
           lat["median_ms"], lat["p90_ms"], report["cold"]["cold_ms"], peak, mj, json.dumps(report))
    with closing(_connect()) as conn, conn:  # the inner `conn` commits the insert, or rolls it back
        cur = conn.execute(
            "INSERT INTO runs (created, label, model, target, compression, device, arch, median_ms, p90_ms, cold_ms, "
            "peak_kb, mj_per_inference, report) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
        return int(cur.lastrowid)


def runs(limit: int | None = None) -> list[RunRow]:
    """The newest runs first."""
    cols = ", ".join(RunRow.__dataclass_fields__)
    with closing(_connect()) as conn:
        rows = conn.execute(f"SELECT {cols} FROM runs ORDER BY id DESC LIMIT ?", (limit or -1,)).fetchall()
    return [RunRow(*r) for r in rows]


def report(run_id: int) -> dict:
    """The full report of one run."""
    with closing(_connect()) as conn:
        row = conn.execute("SELECT report FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise ResultsError(f"no run with id {run_id} in {database_path()}; 'edgert results' lists the ids")
    return json.loads(row[0])


# ------------------------------------------------------------------ views


def list_table(rows: list[RunRow]) -> str:
    if not rows:
        return f"no profiles recorded yet in {database_path()}; run 'edgert profile BUNDLE --device DEV'"
    from edgert.device.views import ms

    header = ("id", "when (UTC)", "bundle", "target", "compression", "device", "median ms", "p90 ms", "cold ms", "peak MiB", "mJ/inf")
    body = [(str(r.id), r.created.replace("T", " ")[:19].replace("+00:00", ""), r.label, r.target, r.compression, r.device,
             ms(r.median_ms), ms(r.p90_ms), ms(r.cold_ms), "-" if r.peak_kb is None else f"{r.peak_kb / 1024:.1f}",
             "-" if r.mj_per_inference is None else f"{r.mj_per_inference:.4g}") for r in rows]
    return _grid([header, *body], numeric_from=6)


def compare_table(reports: dict[int, dict]) -> str:
    """Runs side by side, one column each; ratios are against the first run."""
    from edgert.device.views import ms, peak_kib

    ids = list(reports)
    first = reports[ids[0]]

    def metric(r: dict, name: str) -> float | None:
        lat = r["latency"]
        if name in lat:
            return lat[name]
        if name == "cold_ms":
            return r["cold"]["cold_ms"]
        if name == "peak_mib":
            kib = peak_kib(r["memory"])
            return None if kib is None else kib / 1024
        rails = (r.get("energy") or {}).get("rails") or []
        return rails[0]["joules_per_inference"] * 1e3 if rails else None

    rows = [["", *(f"#{i}" for i in ids)]]
    for key in ("label", "target", "compression", "device", "created"):
        rows.append([key, *(str(reports[i]["bundle"].get(key) or reports[i].get(key, "")) for i in ids)])
    metrics = (("median_ms", "median ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("min_ms", "min ms"),
               ("std_ms", "std ms"), ("cold_ms", "cold start ms"), ("peak_mib", "peak MiB"), ("mj", "mJ/inference"))
    for key, title in metrics:
        base = metric(first, key)
        cells = []
        for i in ids:
            v = metric(reports[i], key)
            text = "-" if v is None else ms(v) if key.endswith("_ms") else f"{v:.4g}"
            if v is not None and base and i != ids[0]:
                text += f" ({v / base:.2f}x)"
            cells.append(text)
        rows.append([title, *cells])
    return _grid(rows, numeric_from=1)


def _grid(rows: list[list[str] | tuple[str, ...]], numeric_from: int) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if c >= numeric_from else cell.ljust(w)
                               for c, (cell, w) in enumerate(zip(r, widths, strict=True))).rstrip() for r in rows)
