"""Accuracy of the zoo models after pruning, sparsity and low-rank factorisation (no fine-tuning).

For each zoo model and each compression, one line: MACs and parameters kept,
output SQNR against the float model on calibration data, and validation
accuracy before/after through the zoo harness. Every pass calibrates on the
model's calibration split; the validation split stays unseen.

Usage (project venv):
    .venv/bin/python tools/prune_zoo.py                      # all zoo models, the default recipes
    .venv/bin/python tools/prune_zoo.py --models vit_digits --recipes lowrank:keep=0.6,ops=MatMul
"""
from __future__ import annotations

import argparse
import sys
import time

RECIPES = ("prune:structured:keep=0.6", "prune:2:4", "prune:unstructured:0.5", "lowrank:keep=0.6",
           "lowrank:keep=0.6,ops=MatMul")


def apply(model, recipe: str, calib: str):
    from edgert.compress.lowrank import lowrank
    from edgert.compress.lowrank import parse_spec as lowrank_spec
    from edgert.compress.prune import parse_spec as prune_spec
    from edgert.compress.prune import prune

    kind, _, spec = recipe.partition(":")
    if kind == "prune":
        return prune(model, prune_spec(spec), calib)
    if kind == "lowrank":
        return lowrank(model, lowrank_spec(spec), calib)
    raise SystemExit(f"unknown recipe '{recipe}': start it with prune: or lowrank:")


def main(argv: list[str] | None = None) -> int:
    from edgert.model import load
    from edgert.zoo.registry import get, list_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=lambda s: [x for x in s.split(",") if x],
                    default=["digits_cnn", "mobilenetv2_digits", "vit_digits"])
    ap.add_argument("--recipes", type=lambda s: s.split(";"), default=list(RECIPES),
                    help="';'-separated, e.g. 'prune:2:4;lowrank:energy=0.95'")
    args = ap.parse_args(argv)
    known = {m.name for m in list_models()}
    print("| model | compression | MACs kept | params kept | output SQNR dB | accuracy before | after | drop (points) | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        if name not in known:
            print(f"| {name} | - | unknown zoo model | | | | | | |")
            continue
        model = load(get(name).onnx_path)
        for recipe in args.recipes:
            t0 = time.perf_counter()
            try:
                _, rep = apply(model, recipe, name)
            except Exception as exc:  # noqa: BLE001 - one failing recipe is one row
                print(f"| {name} | {recipe} | error: {' '.join(str(exc).split())[:80]} | | | | | | |")
                continue
            acc = rep.accuracy
            macs = f"{rep.macs[1] / rep.macs[0]:.1%}"
            if rep.pass_name == "lowrank" and rep.layers:  # also the share kept of the layers it may factorise
                before, after = (sum(lay["macs"][i] for lay in rep.layers) for i in (0, 1))
                macs += f" (candidates {after / before:.1%})"
            print(f"| {name} | {recipe} | {macs} | {rep.params[1] / rep.params[0]:.1%} | "
                  f"{rep.output_sqnr_db:.1f} | {acc['before']:.2%} | {acc['after']:.2%} | "
                  f"{100 * (acc['before'] - acc['after']):.2f} | {time.perf_counter() - t0:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
