"""Command line: each command builds one typed config and calls one library function."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from edgert.errors import EdgertError


def _handle_errors(fn):
    """Map EdgertError to one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgertError as exc:
            if os.environ.get("EDGERT_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was written", err=True)
            sys.exit(130)

    return wrapper


@click.group()
@click.version_option(package_name="edgert")
def main() -> None:
    """Compress, compile and deploy neural networks to edge devices."""


@main.command()
@_handle_errors
def targets() -> None:
    """List the boards edgert can compile for."""
    from edgert.compiler.targets import list_targets

    rows = list_targets()
    width = max(len(t.name) for t in rows)
    for t in rows:
        llvm = t.host_llvm
        cpu = llvm.get("mcpu", "generic")
        feats = ",".join(llvm.get("mattr", [])) or "-"
        gpu = f" {t.tvm['arch']}" if t.is_cuda else ""
        click.echo(f"{t.name:<{width}}  {t.arch:<7}  {t.device}{gpu:<6}  cpu={cpu} {feats}  vector={t.vector_bits}b  {t.description}")


@main.command("compile")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", default="host", show_default=True, help="board name (see 'edgert targets') or a .toml file")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="bundle directory, or a .tar.gz")
@click.option("--input-shape", multiple=True, metavar="NAME=1x3x224x224", help="pin an input's dynamic dimensions")
@click.option("--mean", default="0", show_default=True, help="image normalisation mean(s), comma separated, after scaling to [0,1]")
@click.option("--std", default="1", show_default=True, help="image normalisation std(s), comma separated")
@click.option(
    "--schedules",
    type=click.Choice(["auto", "default", "naive"]),
    default="auto",
    show_default=True,
    help="auto: tuning records, else edgert's default schedules; default: ignore tuning records; naive: TVM's plain loops",
)
@click.option(
    "--tuning-db", multiple=True, type=click.Path(path_type=Path), help="extra tuning database folder (from 'edgert tune --db')"
)
@click.option("--sparse", default="auto", show_default=True, help="sparse kernels: auto (cost model), off, or a min sparsity such as 0.8")
@_handle_errors
def compile_cmd(
    model: Path,
    target: str,
    output: Path | None,
    input_shape: tuple[str, ...],
    mean: str,
    std: str,
    schedules: str,
    tuning_db: tuple[Path, ...],
    sparse: str,
) -> None:
    """Compile MODEL (.onnx or .tflite) into a bundle for a target."""
    from edgert.compiler.build import CompileOptions, ImageConfig, compile
    from edgert.model import parse_input_shapes

    options = CompileOptions(
        target=target,
        input_shapes=parse_input_shapes(input_shape),
        image=ImageConfig(mean=_floats(mean, "--mean"), std=_floats(std, "--std")),
        schedules=schedules,
        tuning_db=tuning_db,
        sparse=sparse,
    )
    bundle = compile(model, output=output, options=options)
    total = sum(bundle.sizes().values())
    click.echo(f"bundle: {bundle.path} ({total / 1e6:.1f} MB, {bundle.target['name']}, {bundle.arch})")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", default="host", show_default=True, help="board name (see 'edgert targets') or a .toml file")
@click.option("--trials", type=int, help="candidates to measure in all (default: every candidate)")
@click.option("--minutes", type=float, help="stop after this many minutes (what was measured is kept)")
@click.option("--db", type=click.Path(path_type=Path), help="database folder (default: the target's database in the edgert cache)")
@click.option("--device", "-d", help="measure on a device: qemu, ssh://USER@HOST[:PORT] or adb[:SERIAL]")
@click.option("--tracker", metavar="HOST:PORT", help="TVM RPC tracker of a device farm")
@click.option("--key", help="device key at the tracker")
@click.option("--input-shape", multiple=True, metavar="NAME=1x3x224x224", help="pin an input's dynamic dimensions")
@_handle_errors
def tune(
    model: Path,
    target: str,
    trials: int | None,
    minutes: float | None,
    db: Path | None,
    device: str | None,
    tracker: str | None,
    key: str | None,
    input_shape: tuple[str, ...],
) -> None:
    """Measure schedule choices for MODEL's layers; later compiles use the best ones.

    Interrupting keeps everything measured so far; running again resumes.
    """
    from edgert.compiler.tuning import TuneOptions
    from edgert.compiler.tuning import tune as run_tune
    from edgert.errors import TuningError
    from edgert.model import load, parse_input_shapes

    if tracker and not key:
        raise TuningError("--tracker needs --key (the device key the boards registered with)")
    options = TuneOptions(trials=trials, minutes=minutes, database=db, device=device, tracker=tracker, key=key)
    run_tune(load(model, parse_input_shapes(input_shape)), target, options)


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise EdgertError(f"{flag} '{text}' must be numbers separated by commas, e.g. 0.485,0.456,0.406") from None
    if flag == "--std" and any(v == 0 for v in values):
        raise EdgertError("--std values must be non-zero")
    return values


@main.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option("--device", "-d", default="local", show_default=True, help="local or qemu")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE", help=".npy or image file per input (default: the golden input)")
@click.option("--output-dir", type=click.Path(path_type=Path), help="write each output as NAME.npy here")
@click.option("--check", is_flag=True, help="compare with the golden reference output; non-zero exit on mismatch")
@click.option("--timeout", default=600.0, show_default=True, help="seconds before the run is abandoned")
@_handle_errors
def run(bundle_path: Path, device: str, inputs: tuple[str, ...], output_dir: Path | None, check: bool, timeout: float) -> None:
    """Run a compiled bundle on a device."""
    from edgert.bundle import Bundle
    from edgert.device.local import open_device
    from edgert.fsutil import atomic_write_bytes
    from edgert.runtime import session
    from edgert.runtime.inputs import load_input, parse_input_args, sanitize

    bundle = Bundle.open(bundle_path)
    dev = open_device(device)
    files = parse_input_args(inputs, bundle.inputs)
    feeds = None
    if files:
        specs = {s.name: s for s in bundle.inputs}
        golden = bundle.golden_inputs()
        feeds = {name: load_input(files[name], specs[name], bundle.image_config(name)) if name in files else golden[name]
                 for name in specs}
    result = session.run_on_device(bundle, dev, feeds, timeout=timeout)
    for spec in bundle.outputs:
        arr = result.outputs[spec.name]
        top = f" argmax={int(arr.argmax())}" if arr.size > 1 and arr.dtype.kind == "f" else ""
        click.echo(f"{spec.name}: {'x'.join(map(str, arr.shape))} {arr.dtype}{top}")
    if output_dir:
        import io

        import numpy as np

        for name, arr in result.outputs.items():
            buf = io.BytesIO()
            np.save(buf, arr)
            atomic_write_bytes(output_dir / f"{sanitize(name)}.npy", buf.getvalue())
        click.echo(f"outputs written to {output_dir}")
    if result.run_ms:
        click.echo(f"run: {result.run_ms[0]:.2f} ms on {dev.name} (load {result.load_ms:.1f} ms)")
    if check:
        golden_result = result if feeds is None else session.run_on_device(bundle, dev, None, timeout=timeout)
        for a in session.check(golden_result.outputs, bundle):
            click.echo(f"check {a.name}: max|err| {a.max_abs_err:.3g} ({a.ratio:.2g} of max|ref|) vs "
                       f"{bundle.manifest['golden']['reference']}: ok")


@main.group()
def zoo() -> None:
    """The model zoo: small trained models with evaluation data."""


@zoo.command("list")
@_handle_errors
def zoo_list() -> None:
    """Name, task, size and float accuracy of each zoo model."""
    from edgert.zoo import list_models

    models = list_models()
    if not models:
        raise EdgertError("no zoo models are installed; reinstall edgert (pip install edgert)")
    width = max(len(m.name) for m in models)
    click.echo(f"{'name':<{width}}  {'params':>8}  {'MACs':>10}  {'accuracy':>8}  task")
    for m in models:
        click.echo(f"{m.name:<{width}}  {m.params:>8,}  {m.macs:>10,}  {m.float_accuracy:>8.2%}  {m.task}")


@zoo.command("export")
@click.argument("name")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="folder to create")
@_handle_errors
def zoo_export(name: str, output: Path) -> None:
    """Write a zoo model, its calibration data (.npz) and its card to a folder."""
    from edgert.zoo.export import export

    export(name, output)
    click.echo(f"{name}: model.onnx, calibration.npz, card.md, meta.json written to {output}")


if __name__ == "__main__":
    main()
