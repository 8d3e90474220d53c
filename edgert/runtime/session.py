"""Run a bundle: in this process through TVM, or through its native runner on a device."""
from __future__ import annotations

import contextlib
import json
import posixpath
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgert.bundle import Bundle
from edgert.device.compat import check_compatible
from edgert.device.transport import shares_host_files
from edgert.errors import CheckFailedError, EdgertError, InputError, RunError
from edgert.runtime.inputs import conform, sanitize

_EXIT_CODE_ERRORS = {2: InputError}


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    load_ms: float | None = None
    run_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Agreement:
    """How far outputs are from the golden ones: max |err| and its ratio to max |ref|."""

    name: str
    max_abs_err: float
    max_abs_ref: float
    ok: bool

    @property
    def ratio(self) -> float:
        return self.max_abs_err / self.max_abs_ref if self.max_abs_ref else self.max_abs_err


def run_in_process(bundle: Bundle, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from edgert.device.compat import check_here

    check_here(bundle)
    import tvm
    from tvm import relax

    feeds = _conform_all(bundle, feeds)
    dev = tvm.cuda(0) if bundle.device_kind == "cuda" else tvm.cpu()
    # Loaded from a private copy of the bytes just hashed: swapping the file in the bundle
    # folder after Bundle.open (or during this call) cannot get unchecked code loaded.
    with bundle.verified_copy(bundle.manifest["runtime"]["model"]) as model_so:
        lib = tvm.runtime.load_module(str(model_so))
    vm = relax.VirtualMachine(lib, dev)
    args = [tvm.runtime.tensor(feeds[s.name], dev) for s in bundle.inputs]
    result = vm["main"](*args)
    outs = list(result) if not hasattr(result, "numpy") else [result]
    return {s.name: o.numpy() for s, o in zip(bundle.outputs, outs, strict=True)}


def run_on_device(
    bundle: Bundle,
    device,
    feeds: dict[str, np.ndarray] | None = None,
    repeat: int = 1,
    timeout: float = 600.0,
) -> RunResult:
    """Run ``bundle`` with its native runner on ``device`` (a Transport; feeds default to the golden inputs).

    A device that sees this machine's files (local, qemu) runs the bundle where it lies; any
    other first gets it deployed (incrementally: unchanged files are not sent again).
    """
    check_compatible(bundle, device)
    if shares_host_files(device):
        return run_deployed(bundle, device, str(bundle.path.resolve()), feeds, repeat, timeout)
    from edgert.device.deploy import deploy

    dep = deploy(bundle, device, check=False, timeout=timeout)
    return run_deployed(bundle, device, dep.remote_dir, feeds, repeat, timeout)


def run_deployed(
    bundle: Bundle,
    device,
    remote_dir: str,
    feeds: dict[str, np.ndarray] | None = None,
    repeat: int = 1,
    timeout: float = 600.0,
) -> RunResult:
    """Run the copy of ``bundle`` at ``remote_dir`` on ``device``: inputs pushed as .npy files
    into a fresh folder there, outputs pulled back, the folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="edgert-run-") as tmp:
        local = shares_host_files(device)
        io_dir = tmp if local else posixpath.join(device.workdir(), "runs", uuid.uuid4().hex)
        try:
            argv = [posixpath.join(remote_dir, bundle.manifest["runtime"]["runner"]), remote_dir]
            if feeds is None:
                argv.append("--golden")
            else:
                for name, arr in _conform_all(bundle, feeds).items():
                    f = Path(tmp, f"in_{sanitize(name)}.npy")
                    np.save(f, arr)
                    remote = posixpath.join(io_dir, f.name)
                    if not local:
                        device.push(f, remote, timeout=timeout)
                    argv += ["--input", f"{name}={remote}"]
            outdir = posixpath.join(io_dir, "out")
            argv += ["--output-dir", outdir, "--repeat", str(repeat)]
            report = _parse_report(device.run(argv, timeout=timeout), device)
            outputs = {}
            for s in bundle.outputs:
                f = Path(tmp, "out", f"{sanitize(s.name)}.npy")
                if not local:
                    device.pull(posixpath.join(outdir, f.name), f, timeout=timeout)
                outputs[s.name] = np.load(f)
        finally:
            if not local:
                with contextlib.suppress(EdgertError):
                    device.run(["rm", "-rf", io_dir], timeout=60)
    return RunResult(outputs, report.get("load_ms"), list(report.get("run_ms", [])))


@dataclass
class StreamResult:
    """``edgert-run --stream``: each output's emitted steps stacked on axis 0, and the runner's timing."""

    outputs: dict[str, np.ndarray]
    frames: int
    emitted: int
    step_ms: dict[str, float]  # median, mean, min, p90 over every step of every pass
    load_ms: float | None = None


def run_stream_on_device(bundle: Bundle, device, frames: np.ndarray, repeat: int = 1,
                         timeout: float = 600.0) -> StreamResult:
    """Stream ``frames`` (axis 0) through a step-model bundle with its native runner on ``device``.

    The state stays inside the C library between steps (``edgert_stream_step``); only the
    emitted outputs come back.
    """
    if bundle.stream is None:
        raise InputError(f"{bundle.path.name} is not a continual step model; convert the model with "
                         "'edgert continual MODEL -o STEP.onnx --time-axis N' and compile STEP.onnx")
    check_compatible(bundle, device)
    frame_name = next(s for s in bundle.inputs if not s.name.startswith("state_in_"))
    frames = np.ascontiguousarray(np.asarray(frames, dtype=frame_name.dtype))
    per = int(np.prod(frame_name.shape))
    if frames.ndim < 1 or frames.size == 0 or frames.size != len(frames) * per:
        raise InputError(f"frames have shape {list(frames.shape)}; give frames along axis 0, each "
                         f"{list(frame_name.shape)} (the time axis of size 1 may be left out)")
    if shares_host_files(device):
        remote_dir = str(bundle.path.resolve())
    else:
        from edgert.device.deploy import deploy

        remote_dir = deploy(bundle, device, check=False, timeout=timeout).remote_dir
    with tempfile.TemporaryDirectory(prefix="edgert-stream-") as tmp:
        local = shares_host_files(device)
        io_dir = tmp if local else posixpath.join(device.workdir(), "runs", uuid.uuid4().hex)
        try:
            f = Path(tmp, "frames.npy")
            np.save(f, frames)
            remote = posixpath.join(io_dir, f.name)
            if not local:
                device.push(f, remote, timeout=timeout)
            outdir = posixpath.join(io_dir, "out")
            argv = [posixpath.join(remote_dir, bundle.manifest["runtime"]["runner"]), remote_dir,
                    "--stream", remote, "--output-dir", outdir, "--repeat", str(repeat)]
            report = _parse_report(device.run(argv, timeout=timeout), device)
            outputs = {}
            for item in report["outputs"]:
                g = Path(tmp, "out", f"{sanitize(item['name'])}.npy")
                if not local:
                    g.parent.mkdir(exist_ok=True)
                    device.pull(posixpath.join(outdir, g.name), g, timeout=timeout)
                outputs[item["name"]] = np.load(g)
        finally:
            if not local:
                with contextlib.suppress(EdgertError):
                    device.run(["rm", "-rf", io_dir], timeout=60)
    return StreamResult(outputs, int(report["frames"]), int(report["emitted"]), dict(report["step_ms"]),
                        report.get("load_ms"))


def _parse_report(proc, device) -> dict:
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("EDGERT ")), None)
    if line is None:
        status = f"exit code {proc.returncode}"
        if proc.returncode < 0 or proc.returncode > 128:  # killed: negative locally, 128+N through a shell
            import signal

            with contextlib.suppress(ValueError):
                status = f"killed by {signal.Signals(abs(proc.returncode) % 128).name}"
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or status
        raise RunError(f"the bundle runner on {device.name} failed without a report: {tail}")
    try:
        report = json.loads(line[len("EDGERT "):])
    except ValueError:
        raise RunError(f"the bundle runner on {device.name} printed a malformed report: {line[:200]}") from None
    if report.get("status") != "ok":
        from edgert.errors import ArchMismatchError, BundleError, BundleIntegrityError

        cls = {"integrity": BundleIntegrityError, "arch": ArchMismatchError, "bundle": BundleError,
               "input": InputError, "usage": InputError}.get(report.get("code"), RunError)
        raise cls(f"on {device.name}: {report.get('message', 'unknown error')}")
    return report


def _conform_all(bundle: Bundle, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    specs = bundle.inputs
    missing = [s.name for s in specs if s.name not in feeds]
    extra = sorted(set(feeds) - {s.name for s in specs})
    if missing or extra:
        raise InputError(
            f"inputs do not match the model: missing {', '.join(missing) or 'none'}, unknown {', '.join(extra) or 'none'}; "
            f"the model's inputs are {', '.join(s.name for s in specs)}"
        )
    return {s.name: conform(np.asarray(feeds[s.name]), s, "the given array") for s in specs}


def compare(outputs: dict[str, np.ndarray], golden: dict[str, np.ndarray], rtol: float = 1e-4) -> list[Agreement]:
    """Per-output agreement: float outputs within rtol × max|ref|, integer outputs exactly."""
    result = []
    for name, ref in golden.items():
        got = outputs[name]
        if got.shape != ref.shape:
            result.append(Agreement(name, float("inf"), 0.0, False))
            continue
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        err = float(np.max(np.abs(got64 - ref64))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref64))) if ref.size else 0.0
        exact = not np.issubdtype(ref.dtype, np.floating)
        ok = err == 0.0 if exact else err <= rtol * scale + 1e-7 and np.isfinite(got64).all()
        result.append(Agreement(name, err, scale, bool(ok)))
    return result


def check(outputs: dict[str, np.ndarray], bundle: Bundle) -> list[Agreement]:
    """Compare with the bundle's golden outputs; CheckFailedError on any mismatch."""
    agreements = compare(outputs, bundle.golden_outputs(), bundle.manifest["golden"].get("rtol", 1e-4))
    bad = [a for a in agreements if not a.ok]
    if bad:
        detail = ", ".join(f"{a.name}: max|err| {a.max_abs_err:.3g} vs max|ref| {a.max_abs_ref:.3g}" for a in bad)
        raise CheckFailedError(
            f"outputs differ from the {bundle.manifest['golden']['reference']} reference ({detail}); "
            "the bundle computes wrong results on this device"
        )
    return agreements
