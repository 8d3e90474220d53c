"""Make the tuning database shipped with edgert: tune every zoo model on this machine.

    .venv/bin/python tools/tune_zoo.py [--minutes-per-model M] [--models a,b]

Writes ``edgert/tuning_db/<arch>-v<vector bits>/`` (e.g. ``x86_64-v256``); ``edgert compile``
uses it on every host of that class that has no record of its own. Run it on an idle
machine: the records are timings. Re-running resumes (measured candidates are skipped).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from edgert.compiler.targets import load_target
    from edgert.compiler.tuning import TuneOptions, class_key, compact_database, tune
    from edgert.zoo.registry import list_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes-per-model", type=float, default=None)
    ap.add_argument("--models", default="", help="comma-separated zoo names (default: all)")
    args = ap.parse_args()
    tgt = load_target("host")
    db = ROOT / "edgert" / "tuning_db" / class_key(tgt)
    wanted = {m for m in args.models.split(",") if m}
    for model in list_models():
        if wanted and model.name not in wanted:
            continue
        print(f"== {model.name}", flush=True)
        tune(model.onnx_path, tgt, TuneOptions(minutes=args.minutes_per_model, database=db))
    n = compact_database(db)
    print(f"database: {db.relative_to(ROOT)} ({n} workloads, best record of each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
