"""Command line: each command builds one typed config and calls one library function."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

import click

from edgert.errors import EdgertError

DEVICE_HELP = ("local, qemu, ssh://USER@HOST[:PORT], adb[:SERIAL] or serial:///dev/ttyUSB0[?baud=115200]; "
               "add ?target=NAME to refuse bundles built for another board")

def _handle_errors(fn):
    """Map EdgertError to one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgertError as exc:
            if os.environ.get("EDGERT_DEBUG"):
                raise
            # Control bytes quoted from a damaged file are shown escaped, not sent to the terminal.
            text = "".join(c if c.isprintable() or c == "\n" else ascii(c)[1:-1] for c in str(exc))
            click.echo(f"error: {text}", err=True)
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
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="the compressed .onnx file")
@click.option("--prune", "prune_spec", metavar="SPEC",
              help="structured:keep=0.6 (keep 60% of the MACs, whole channels), unstructured:0.9 or 2:4 "
                   "(zeroed weights); keys width=N, min_keep=F, samples=N, reconstruct=0")
@click.option("--lowrank", "lowrank_spec", metavar="SPEC",
              help="energy=0.95 (per-layer output energy kept) or keep=0.6 (of the factorised layers' MACs); "
                   "keys width=N, ops=MatMul+Gemm+Conv, samples=N")
@click.option("--target", "-t", "prune_target", metavar="NAME",
              help="round pruned channel counts to this board's vector width (default 8)")
@click.option("--quantize", "quantize_spec", metavar="SPEC",
              help="int8[:METHOD][,key=value...]: METHOD minmax|percentile|entropy|mse; keys adaround=1, "
                   "equalize=auto|on|off, bias_correction=0, samples=N, percentile=99.99")
@click.option("--calib", metavar="DATA", help=".npz (one array per input, samples on axis 0), an image folder or a zoo name")
@click.option("--keep-float", metavar="auto|LAYER,...",
              help="layers (node names) to leave float; auto: the most sensitive until the output SQNR "
                   "(or a zoo model's accuracy) holds")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="write the per-layer report as JSON here")
@click.option("--input-shape", multiple=True, metavar="NAME=1x3x224x224", help="pin an input's dynamic dimensions")
@_handle_errors
def compress(model: Path, output: Path, prune_spec: str | None, lowrank_spec: str | None, prune_target: str | None,
             quantize_spec: str | None, calib: str | None, keep_float: str | None,
             report_path: Path | None, input_shape: tuple[str, ...]) -> None:
    """Compress MODEL (.onnx) into a smaller ONNX model: pruning, then low-rank factorisation, then int8
    quantisation (QDQ, runs in onnxruntime too), each when asked for."""
    from edgert.compress.lowrank import lowrank
    from edgert.compress.lowrank import parse_spec as lowrank_spec_of
    from edgert.compress.prune import parse_spec as prune_spec_of
    from edgert.compress.prune import prune
    from edgert.compress.quantize import parse_spec, quantize
    from edgert.model import load, parse_input_shapes

    if not (quantize_spec or prune_spec or lowrank_spec):
        raise EdgertError("nothing to do: give a compression, e.g. --quantize int8 --calib DATA")
    result = load(model, parse_input_shapes(input_shape))
    reports = {}
    if prune_spec:  # prune -> lowrank -> quantize: each pass calibrates on the previous one's output
        result, reports["prune"] = prune(result, prune_spec_of(prune_spec, prune_target), calib)
        click.echo(reports["prune"].summary())
    if lowrank_spec:
        result, reports["lowrank"] = lowrank(result, lowrank_spec_of(lowrank_spec), calib)
        click.echo(reports["lowrank"].summary())
    if not quantize_spec:
        _write_reports(report_path, {k: r.to_json() for k, r in reports.items()})
        result.save(output)
        click.echo(f"wrote {output}" + (f" and {report_path}" if report_path else ""))
        return
    spec = parse_spec(quantize_spec, keep_float)
    result, report = quantize(result, spec, calib)
    # Quantisation alone keeps its report format; with other passes the file holds one report per pass.
    _write_reports(report_path, {**{k: r.to_json() for k, r in reports.items()}, "quantize": report.to_json()}
                   if reports else report.to_json())
    result.save(output)
    click.echo(report.table(5))
    acc = ""
    if report.calib_accuracy:
        acc = f"; calibration-split accuracy {report.calib_accuracy['float']:.2%} float, {report.calib_accuracy['int8']:.2%} int8"
    kept = f", {len(report.kept_float)} kept float ({', '.join(report.kept_float)})" if report.kept_float else ""
    click.echo(f"quantized {len(report.layers) - len(report.kept_float)} layers to int8{kept}; "
               f"output SQNR {report.output_sqnr_db:.1f} dB vs float on calibration data{acc}")
    click.echo(f"wrote {output}" + (f" and {report_path}" if report_path else ""))


def _write_reports(path: Path | None, data) -> None:
    if path:
        import json

        from edgert.fsutil import atomic_write_bytes

        atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


@main.command("continual")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="the step model (.onnx)")
@click.option("--time-axis", type=int, required=True, help="index of the time axis in the model's input, e.g. 2 for NCT")
@click.option("--input-shape", multiple=True, metavar="NAME=1x8x64", help="pin an input's dynamic dimensions (time = the window)")
@_handle_errors
def continual_cmd(model: Path, output: Path, time_axis: int, input_shape: tuple[str, ...]) -> None:
    """Turn a temporal MODEL into a step model: one frame in, one time step out, state as graph I/O."""
    from edgert.compress.continual import ContinualSpec, continual
    from edgert.model import load, parse_input_shapes

    step, report = continual(load(model, parse_input_shapes(input_shape)), ContinualSpec(time_axis))
    step.save(output)
    frames = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in report.frame_shapes.items())
    click.echo(f"frame: {frames}; delay {report.delay} frames, one output every {report.stride}, "
               f"receptive field {report.receptive_field} frames; {len(report.states)} state tensors")
    click.echo(f"MACs per step {report.macs_step:,} vs {report.macs_offline:,} per offline window "
               f"({report.macs_offline / max(report.macs_step, 1):.1f}x fewer)")
    click.echo(f"wrote {output}")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", default="host", show_default=True, help="board name (see 'edgert targets') or a .toml file")
@click.option("--trials", type=int, help="candidates to measure in all (default: every candidate)")
@click.option("--minutes", type=float, help="stop after this many minutes (what was measured is kept)")
@click.option("--db", type=click.Path(path_type=Path), help="database folder (default: the target's database in the edgert cache)")
@click.option("--device", "-d", help="measure on a device: qemu or ssh://USER@HOST[:PORT]")
@click.option("--tracker", metavar="HOST:PORT", help="TVM RPC tracker of a device farm")
@click.option("--key", help="device key at the tracker")
@click.option("--input-shape", multiple=True, metavar="NAME=1x3x224x224", help="pin an input's dynamic dimensions")
@click.option("--threads", metavar="N[,N]", help="thread counts to time each candidate at on this machine (default: 1 and all cores)")
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
    threads: str | None,
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
    counts = tuple(int(n) for n in _floats(threads, "--threads")) if threads else ()
    options = TuneOptions(trials=trials, minutes=minutes, database=db, device=device, tracker=tracker, key=key, threads=counts)
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
@click.option("--device", "-d", default="local", show_default=True, help=DEVICE_HELP)
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE", help=".npy or image file per input (default: the golden input)")
@click.option("--output-dir", type=click.Path(path_type=Path), help="write each output as NAME.npy here")
@click.option("--check", is_flag=True, help="compare with the golden reference output; non-zero exit on mismatch")
@click.option("--stream", "stream_file", type=click.Path(path_type=Path), metavar="FRAMES.npy",
              help="continual step model: run every frame (axis 0) as one stream, state kept on the device")
@click.option("--timeout", default=600.0, show_default=True, help="seconds before the run is abandoned")
@click.option("--backend", type=click.Choice(["bundle", "host"]), default="bundle", show_default=True,
              help="host: run an .onnx MODEL with the Numba host executor (no TVM); --check compares with onnxruntime")
@click.option("--threads", type=int, help="--backend host: threads (default: all cores)")
@_handle_errors
def run(bundle_path: Path, device: str, inputs: tuple[str, ...], output_dir: Path | None, check: bool,
        stream_file: Path | None, timeout: float, backend: str, threads: int | None) -> None:
    """Run a compiled bundle on a device (or an ONNX model on this host with --backend host)."""
    from edgert.bundle import Bundle
    from edgert.device import open_device
    from edgert.runtime.inputs import load_input, parse_input_args

    if backend == "host":
        if device != "local" or stream_file is not None:
            raise EdgertError("--backend host runs the model in this process; leave out --device and --stream")
        _run_host(bundle_path, inputs, output_dir, check, threads)
        return
    bundle = Bundle.open(bundle_path)
    if stream_file is not None:
        if inputs or check:
            raise EdgertError("--stream takes its frames from FRAMES.npy; leave out --input and --check")
        dev = open_device(device)
        with contextlib.closing(dev):
            _stream_and_report(bundle, dev, stream_file, output_dir, timeout)
        return
    files = parse_input_args(inputs, bundle.inputs)
    feeds = None
    if files:
        specs = {s.name: s for s in bundle.inputs}
        golden = bundle.golden_inputs()
        feeds = {name: load_input(files[name], specs[name], bundle.image_config(name)) if name in files else golden[name]
                 for name in specs}
    dev = open_device(device)
    with contextlib.closing(dev):
        _run_and_report(bundle, dev, feeds, output_dir, check, timeout)


def _stream_and_report(bundle, dev, frames_file: Path, output_dir: Path | None, timeout: float) -> None:
    from edgert.runtime import session
    from edgert.runtime.inputs import read_npy

    # The header first (size against the file, no object dtype), as for every other input; the
    # frame shape is the stream's to check.
    frames = read_npy(frames_file, None)
    result = session.run_stream_on_device(bundle, dev, frames, timeout=timeout)
    info = bundle.stream
    shown = 20
    for k in range(min(result.emitted, shown)):
        t = info["delay"] + k * info["stride"]
        parts = []
        for name, arr in result.outputs.items():
            step = arr[k]
            top = f" argmax={int(step.argmax())}" if step.size > 1 and step.dtype.kind == "f" else ""
            parts.append(f"{name}{top} max={float(step.max()):.4g}" if step.dtype.kind == "f" else f"{name}")
        click.echo(f"frame {t}: {'; '.join(parts)}")
    if result.emitted > shown:
        click.echo(f"... {result.emitted - shown} more steps")
    if output_dir:
        _save_outputs(result.outputs, output_dir)
        click.echo(f"outputs written to {output_dir} (emitted steps along axis 0)")
    click.echo(f"stream: {result.frames} frames, {result.emitted} outputs (delay {info['delay']}, stride {info['stride']}); "
               f"median step {result.step_ms['median']:.4f} ms on {dev.name}")


def _run_host(model: Path, inputs: tuple[str, ...], output_dir: Path | None, check: bool, threads: int | None) -> None:
    from edgert.host.run import HostRunConfig, input_specs, run_host
    from edgert.runtime.inputs import parse_input_args

    if model.suffix.lower() != ".onnx":
        raise EdgertError(f"--backend host runs .onnx models; {model.name} is not one (compiled bundles run without --backend)")
    from edgert.host.executor import HostExecutor

    files = parse_input_args(inputs, input_specs(HostExecutor(model, threads=threads))) if inputs else {}
    result = run_host(HostRunConfig(model=model, inputs=files, check=check, threads=threads))
    if result.random_inputs:
        click.echo(f"random inputs (seed 0): {', '.join(result.random_inputs)}")
    _echo_outputs(result.outputs, output_dir)
    click.echo(f"run: {result.run_ms:.2f} ms on the host executor (load {result.load_ms:.1f} ms)")
    for c in result.checks:
        click.echo(f"check {c.name}: max|err| {c.max_abs_err:.3g} ({c.max_abs_err / max(c.max_abs_ref, 1e-30):.2g} of max|ref|) "
                   "vs onnxruntime: ok")


def _echo_outputs(outputs, output_dir: Path | None) -> None:
    """One line per output (shape, dtype, argmax), and each as NAME.npy in ``output_dir``."""
    for name, arr in outputs.items():
        top = f" argmax={int(arr.argmax())}" if arr.size > 1 and arr.dtype.kind == "f" else ""
        click.echo(f"{name}: {'x'.join(map(str, arr.shape))} {arr.dtype}{top}")
    if output_dir:
        _save_outputs(outputs, output_dir)
        click.echo(f"outputs written to {output_dir}")


def _save_outputs(outputs, output_dir: Path) -> None:
    """Each output as ``output_dir/NAME.npy``, written atomically."""
    import io

    import numpy as np

    from edgert.fsutil import atomic_write_bytes
    from edgert.runtime.inputs import sanitize

    for name, arr in outputs.items():
        buf = io.BytesIO()
        np.save(buf, arr)
        atomic_write_bytes(output_dir / f"{sanitize(name)}.npy", buf.getvalue())


def _run_and_report(bundle, dev, feeds, output_dir: Path | None, check: bool, timeout: float) -> None:
    from edgert.runtime import session

    result = session.run_on_device(bundle, dev, feeds, timeout=timeout)
    _echo_outputs({spec.name: result.outputs[spec.name] for spec in bundle.outputs}, output_dir)
    if result.run_ms:
        click.echo(f"run: {result.run_ms[0]:.2f} ms on {dev.name} (load {result.load_ms:.1f} ms)")
    if check:
        golden_result = result if feeds is None else session.run_on_device(bundle, dev, None, timeout=timeout)
        for a in session.check(golden_result.outputs, bundle):
            click.echo(f"check {a.name}: max|err| {a.max_abs_err:.3g} ({a.ratio:.2g} of max|ref|) vs "
                       f"{bundle.manifest['golden']['reference']}: ok")


@main.command()
@click.argument("source", metavar="BUNDLE|MODEL", type=click.Path(path_type=Path))
@click.option("--device", "-d", required=True, help=DEVICE_HELP)
@click.option("--target", "-t", help="with a MODEL (.onnx/.tflite): compile it for this board first (see 'edgert targets')")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="with a MODEL: keep the compiled bundle here")
@click.option("--input-shape", multiple=True, metavar="NAME=1x3x224x224", help="with a MODEL: pin an input's dynamic dimensions")
@click.option("--no-check", is_flag=True, help="skip the golden check on the device")
@click.option("--timeout", default=600.0, show_default=True, help="seconds for each transfer or command on the device")
@_handle_errors
def deploy(source: Path, device: str, target: str | None, output: Path | None, input_shape: tuple[str, ...],
           no_check: bool, timeout: float) -> None:
    """Put a bundle on a device (only changed files are sent), verify it there and run its golden check.

    Given a MODEL and --target, compiles it first.
    """
    import tempfile

    from edgert.bundle import Bundle
    from edgert.device import open_device
    from edgert.device.deploy import deploy as deploy_bundle

    is_model = source.suffix.lower() in (".onnx", ".tflite")
    if not is_model and (target or output or input_shape):
        raise EdgertError(f"{source} is a bundle (already compiled); --target, -o and --input-shape only go with a "
                          ".onnx/.tflite MODEL")
    if is_model and not target:
        raise EdgertError(f"deploying the model {source.name} compiles it first; pass --target NAME (see 'edgert targets')")
    with contextlib.ExitStack() as stack:
        dev = stack.enter_context(contextlib.closing(open_device(device)))  # a bad device fails before a slow compile
        if is_model:
            from edgert.compiler.build import CompileOptions, compile
            from edgert.compiler.targets import load_target
            from edgert.errors import ArchMismatchError
            from edgert.model import parse_input_shapes

            if load_target(target).arch != dev.arch:
                raise ArchMismatchError(f"target '{target}' is {load_target(target).arch} but {dev.name} runs {dev.arch}; "
                                        "pick a target for that device (see 'edgert targets')")
            if output is None:  # the device keeps the bundle; here it is only needed until then
                output = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgert-deploy-"))) / "bundle.edgert"
            else:
                click.echo(f"bundle: {output}")
            options = CompileOptions(target=target, input_shapes=parse_input_shapes(input_shape))
            bundle = compile(source, output=output, options=options)
        else:
            bundle = Bundle.open(source)
        dep = deploy_bundle(bundle, dev, check=not no_check, timeout=timeout)
    sent = f"sent {len(dep.sent)} file(s), {dep.bytes_sent / 1e6:.1f} MB; {len(dep.skipped)} unchanged"
    if dep.damaged:
        sent += f"; replaced {len(dep.damaged)} damaged: {', '.join(dep.damaged)}"
    click.echo(f"deployed: {dep.remote_dir} on {dep.device} ({sent})")
    click.echo(f"runner: {dep.runner}")
    if dep.checked:
        click.echo(f"golden check on {dep.device}: ok (vs {bundle.manifest['golden']['reference']})")


@main.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option("--device", "-d", default="local", show_default=True, help=DEVICE_HELP)
@click.option("--warmup", default=10, show_default=True, help="untimed runs after the first (cold) one")
@click.option("--repeat", default=100, show_default=True, help="timed runs")
@click.option("--per-op", is_flag=True, help="time each compiled function (Relax VM instrument), ranked")
@click.option("--energy", is_flag=True, help="energy per inference from the target's power rails (or RAPL, or --power)")
@click.option("--power", multiple=True, metavar="PATH|SPEC",
              help="power source on the device instead of the target's: a sysfs file (energy_uj, power_now, ...), "
                   "a meter's serial port (/dev/ttyUSB0), or name=..,kind=power|vi|energy|stream,path=..[,scale=..]")
@click.option("--energy-idle", default=1.0, show_default=True, help="seconds of idle baseline before the energy runs")
@click.option("--energy-active", default=2.0, show_default=True, help="seconds the energy runs last at least")
@click.option("--sample-ms", default=10, show_default=True, help="power sampling period (ms)")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="write the report as JSON here")
@click.option("--plot", "plot_dir", type=click.Path(path_type=Path), help="write latency.png, per_op.png, power.png here")
@click.option("--no-record", is_flag=True, help="do not add this run to the results history ('edgert results')")
@click.option("--timeout", default=600.0, show_default=True, help="seconds before the device run is abandoned")
@_handle_errors
def profile(bundle_path: Path, device: str, warmup: int, repeat: int, per_op: bool, energy: bool, power: tuple[str, ...],
            energy_idle: float, energy_active: float, sample_ms: int, json_path: Path | None, plot_dir: Path | None,
            no_record: bool, timeout: float) -> None:
    """Measure a bundle on a device: latency spread, cold start, CPU clock, peak memory, per-op time, energy."""
    from edgert.bundle import Bundle
    from edgert.device import open_device, results, views
    from edgert.device.power import parse_power_arg
    from edgert.device.profiler import ProfileOptions
    from edgert.device.profiler import profile as run_profile
    from edgert.fsutil import atomic_write_bytes

    options = ProfileOptions(warmup=warmup, repeat=repeat, per_op=per_op, energy=energy or bool(power),
                             power=tuple(parse_power_arg(p) for p in power), idle_s=energy_idle, active_s=energy_active,
                             sample_ms=sample_ms, timeout=timeout)
    bundle = Bundle.open(bundle_path)
    with contextlib.closing(open_device(device)) as dev:
        report = run_profile(bundle, dev, options).to_json()
    # Kept before anything is printed: `edgert profile ... | head` must not lose the measurement.
    run_id = None if no_record else results.record(report)
    if json_path:
        import json

        atomic_write_bytes(json_path, (json.dumps(report, indent=1) + "\n").encode())
    click.echo(views.table(report))
    if json_path:
        click.echo(f"report: {json_path}")
    if plot_dir:
        click.echo(f"plots: {', '.join(str(p) for p in views.plot(report, plot_dir))}")
    if run_id is not None:
        click.echo(f"recorded as run {run_id} ('edgert results' lists runs)")


@main.command("results")
@click.argument("ids", nargs=-1, type=int, metavar="[ID]...")
@click.option("--compare", is_flag=True, help="side by side (the default for two or more IDs)")
@click.option("--limit", default=20, show_default=True, help="list at most this many runs, newest first")
@_handle_errors
def results_cmd(ids: tuple[int, ...], compare: bool, limit: int) -> None:
    """List recorded profiles; with one ID show that run; with two or more (or --compare ID ID) put
    them side by side, e.g. float vs int8 on one device."""
    from edgert.device import results, views

    if compare and len(ids) < 2:
        raise EdgertError("--compare needs two or more run ids, e.g. 'edgert results --compare 3 4'; 'edgert results' lists them")
    if not ids:
        click.echo(results.list_table(results.runs(limit)))
    elif len(ids) == 1:
        click.echo(views.table(results.report(ids[0])))
    else:
        click.echo(results.compare_table({i: results.report(i) for i in ids}))


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
