"""``edgert tune``: measure the schedule templates' choices per workload, keep the best.

Records live in MetaSchedule JSON databases (one folder per target and CPU): the user's in
the edgert cache, and the one shipped with edgert for the zoo models on the host class of
machine. A workload is a fused PrimFunc (MetaSchedule keys it by structure), so a record
made while tuning one model is found again by every later model with the same layer.
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgert.compiler.schedules import is_scheduled
from edgert.errors import TuningError
from edgert.fsutil import cache_dir

Log = Callable[[str], None]
_WORKLOADS = "database_workload.json"
_RECORDS = "database_tuning_record.json"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- where the databases are


def target_key(tgt) -> str:
    """Folder name of a target's database: board name, architecture and CPU model."""
    llvm = tgt.host_llvm
    cpu = str(llvm.get("mcpu", "generic"))
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{tgt.name}-{tgt.arch}-{cpu}")


def class_key(tgt) -> str:
    """The shipped database's key: records carry over between CPUs of one ISA class."""
    return f"{tgt.arch}-v{tgt.vector_bits}"


def user_database_dir(tgt) -> Path:
    return cache_dir() / "tuning" / target_key(tgt)


def shipped_database_dir(tgt) -> Path | None:
    from importlib import resources

    try:
        root = Path(str(resources.files("edgert.tuning_db")))
    except ModuleNotFoundError:
        return None
    d = root / class_key(tgt)
    return d if (d / _WORKLOADS).is_file() else None


def default_databases(tgt) -> list[Path]:
    """The user's database first (their own measurements), then the shipped one."""
    dirs = [user_database_dir(tgt)]
    shipped = shipped_database_dir(tgt)
    if shipped is not None and tgt.device == "cpu":
        dirs.append(shipped)
    return [d for d in dirs if (d / _WORKLOADS).is_file()]


def open_database(path: Path, readonly: bool = False):
    """A MetaSchedule JSONDatabase in ``path`` (created unless ``readonly``), or None."""
    from tvm.s_tir import meta_schedule as ms

    path = Path(path)
    if readonly and not (path / _WORKLOADS).is_file():
        return None
    if not readonly:
        path.mkdir(parents=True, exist_ok=True)
    try:
        return ms.database.JSONDatabase(
            path_workload=str(path / _WORKLOADS), path_tuning_record=str(path / _RECORDS), allow_missing=not readonly
        )
    except Exception as exc:
        raise TuningError(f"tuning database {path} cannot be read ({_last_line(exc)}); move it aside and tune again") from None


def compact_database(path: Path) -> int:
    """Keep only the best record per workload (what compiles use); returns the workload count.

    The full history matters while tuning (resume); a shipped database needs the winners only.
    """
    import shutil
    import tempfile

    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    path = Path(path)
    db = open_database(path, readonly=True)
    if db is None:
        return 0
    tmp = Path(tempfile.mkdtemp(prefix=".compact-", dir=path.parent))
    try:
        out = open_database(tmp)
        best: dict[int, object] = {}
        for rec in db.get_all_tuning_records():
            key = int(tvm_ffi.structural_hash(rec.workload.mod))
            if key not in best or _ranked_ms(rec.run_secs) < _ranked_ms(best[key].run_secs):
                best[key] = rec
        for rec in best.values():
            wl = out.commit_workload(rec.workload.mod)
            out.commit_tuning_record(
                ms.database.TuningRecord(
                    trace=rec.trace, workload=wl, run_secs=rec.run_secs, target=rec.target, args_info=rec.args_info
                )
            )
        del out
        for name in (_WORKLOADS, _RECORDS):
            (tmp / name).replace(path / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(best)


# ---------------------------------------------------------------- applying records


def task_module(func):
    """The IRModule MetaSchedule keys a workload by (same for tuning and for lookup)."""
    import tvm

    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


def apply_database(mod, target, db):
    """Replace every unscheduled PrimFunc that has a record; returns ``(mod, names)``."""
    import tvm

    tuned, updates = [], {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc) or is_scheduled(func):
            continue
        task = task_module(func)
        if not db.has_workload(task):
            continue
        sch = db.query_schedule(task, target=target, workload_name="main")
        if sch is None or _splits_a_small_kernel(func, sch.mod["main"]):
            continue
        new = sch.mod["main"].without_attr("global_symbol") if "global_symbol" not in (func.attrs or {}) else sch.mod["main"]
        updates[gv] = new.with_attr("tirx.is_scheduled", True)
        tuned.append(gv.name_hint)
    for gv, func in updates.items():
        mod[gv] = func
    return mod, tuned



def _splits_a_small_kernel(func, scheduled) -> bool:
    """Whether a record splits across threads a reduction kernel below the parallel bar
    (schedules.base.worth_parallel, which the tiled_reduction and int8_dot templates apply).

    Records made before the bar existed replay their ``parallel`` on kernels too small for it;
    at 2 threads such a tcn_kws bundle took 13.7-31 us a run against 14.5 us with the default
    schedules. Those records are passed over: the default schedule (and a new tuning run) keeps
    the kernel on the calling thread.
    """
    from tvm import s_tir

    from edgert.compiler.schedules import match
    from edgert.compiler.schedules.base import loop_macs, parallel_min_macs

    if "T.parallel(" not in scheduled.script():
        return False
    rule = match(func)
    if rule is None or rule.name not in ("tiled_reduction", "int8_dot", "int8_depthwise"):
        return False
    sch = s_tir.Schedule(task_module(func))
    macs = max(loop_macs(sch, b) for b in sch.get_child_blocks(sch.get_sblock("root")))
    return macs < parallel_min_macs(int8=rule.name.startswith("int8_"))


# ---------------------------------------------------------------- tuning


@dataclass
class TaskResult:
    name: str
    calls: int
    candidates: int
    measured: int = 0
    failed: int = 0
    default_ms: float | None = None
    best_ms: float | None = None
    error: str | None = None

    @property
    def speedup(self) -> float | None:
        if self.default_ms and self.best_ms:
            return self.default_ms / self.best_ms
        return None


@dataclass
class TuneReport:
    database: Path
    tasks: list[TaskResult] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = ""  # why tuning ended before every candidate was measured

    @property
    def measured(self) -> int:
        return sum(t.measured for t in self.tasks)

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.tasks)

    def summary(self) -> str:
        gain = sum((t.default_ms or 0) * t.calls for t in self.tasks), sum((t.best_ms or t.default_ms or 0) * t.calls for t in self.tasks)
        est = f"; estimated model time {gain[0]:.3f} ms → {gain[1]:.3f} ms" if gain[0] else ""
        return (
            f"{len(self.tasks)} workloads, {self.measured} candidates measured, {self.failed} failed, "
            f"{self.seconds:.0f} s{est}; records in {self.database}" + (f" ({self.stopped})" if self.stopped else "")
        )


@dataclass(frozen=True)
class TuneOptions:
    trials: int | None = None  # candidates to measure in all (None: no limit)
    minutes: float | None = None  # wall-clock budget
    database: Path | None = None  # default: the user's database for the target
    device: str | None = None  # None: this machine; "qemu", "ssh://...", "adb[:SERIAL]"
    tracker: str | None = None  # HOST:PORT of a TVM RPC tracker
    key: str | None = None  # device key at the tracker
    number: int = 5  # runs per measurement
    repeat: int = 3  # measurements per candidate (the median is kept)
    # Thread counts each candidate is timed at on this machine (default: 1 and every core).
    # Records keep all timings and rank by their mean, so a schedule that is fast on one
    # core but does not scale (measured: up to 2.4x between candidates at 2 threads) loses.
    threads: tuple[int, ...] = ()


def tune(model, target, options: TuneOptions | None = None, log: Log = _stderr) -> TuneReport:
    """Measure every template choice of every workload of ``model`` on the target's CPU."""
    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.schedules import CpuInfo, enumerate_space
    from edgert.compiler.targets import load_target
    from edgert.model import Model, load

    options = options or TuneOptions()
    tgt = load_target(target) if not hasattr(target, "tvm") else target
    if tgt.is_cuda:
        raise TuningError(f"{tgt.name} is a CUDA target; edgert tune measures CPU schedules only for now — tune a CPU target")
    if options.trials is not None and options.trials < 1:
        raise TuningError("--trials must be at least 1")
    if options.minutes is not None and options.minutes <= 0:
        raise TuningError("--minutes must be positive")
    if not isinstance(model, Model):
        model = load(model)
    if tgt.arch != _host_arch() and options.device is None and options.tracker is None:
        raise TuningError(
            f"{tgt.name} is {tgt.arch} but this machine is {_host_arch()}: timings must come from the device; "
            "give --device qemu|ssh://USER@HOST|adb or --tracker HOST:PORT --key KEY"
        )
    db_dir = Path(options.database) if options.database else user_database_dir(tgt)
    db = open_database(db_dir)
    report = TuneReport(database=db_dir)
    cpu = CpuInfo.from_target(tgt)
    target_obj = tgt.tvm_target()
    t_start = time.perf_counter()
    deadline = t_start + options.minutes * 60 if options.minutes else None

    log(f"[edgert] tune {model.name} for {tgt.name}: extracting workloads")
    mod = pipeline.fuse(to_relax(model), tgt)
    tasks = _tasks(mod)
    log(f"[edgert] {len(tasks)} workloads; database {db_dir}")
    budget = options.trials
    with _measurer(tgt, options, log) as measure:
        for i, (name, func, calls) in enumerate(tasks, 1):
            if deadline and time.perf_counter() > deadline:
                report.stopped = f"time budget of {options.minutes:g} min reached"
                break
            if budget is not None and budget <= 0:
                report.stopped = f"trial budget of {options.trials} reached"
                break
            task = task_module(func)
            space = enumerate_space(task["main"], cpu)
            result = TaskResult(name=name, calls=calls, candidates=len(space))
            report.tasks.append(result)
            if not space:
                result.error = "no edgert template fits this function; it keeps TVM's default"
                log(f"[edgert] [{i}/{len(tasks)}] {name}: no template (kept as is)")
                continue
            workload = db.commit_workload(task)
            done = {_trace_key(r.trace) for r in db.get_top_k(workload, 10_000)}
            todo = [s for s in space if _trace_key(s.trace) not in done]
            earlier = len(space) - len(todo)
            if budget is not None:
                todo = todo[:budget]
            runs = {}
            if todo:
                bar = _Progress(f"[{i}/{len(tasks)}] {name}", len(todo))
                runs = measure(task, todo, bar.step)
                bar.done()
                if budget is not None:
                    budget -= len(todo)
            for sch, outcome in runs.items():
                secs, error = outcome
                if error is not None:
                    result.failed += 1
                    result.error = result.error or error
                    continue
                result.measured += 1
                db.commit_tuning_record(
                    _record(sch, workload, secs, target_obj, task)
                )
            best = db.get_top_k(workload, 1)
            result.best_ms = _ranked_ms(best[0].run_secs) if best else None
            default = [r for r in db.get_top_k(workload, 10_000) if _trace_key(r.trace) == _trace_key(space[0].trace)]
            result.default_ms = _ranked_ms(default[0].run_secs) if default else None
            gain = f", {result.speedup:.2f}x over the default" if result.speedup else ""
            fails = f", {result.failed} failed" if result.failed else ""
            best_txt = f"best {result.best_ms:.4f} ms" if result.best_ms is not None else "nothing measured"
            log(
                f"[edgert] [{i}/{len(tasks)}] {name} (x{calls}): {len(runs)} measured now, "
                f"{earlier} from earlier{fails}; {best_txt}{gain}"
            )
    report.seconds = time.perf_counter() - t_start
    attempted = report.measured + report.failed
    if attempted and report.measured == 0:
        first = next((t.error for t in report.tasks if t.error), "unknown error")
        raise TuningError(f"0 of {attempted} candidates could be measured on {tgt.name}; first error: {first}")
    log(f"[edgert] tuned: {report.summary()}")
    return report


def _host_arch() -> str:
    import platform

    return platform.machine()


def _tasks(mod):
    """``[(name, PrimFunc, calls)]``, the most expensive (flops x calls) first."""
    import tvm
    from tvm import relax

    calls: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(tvm.ir.Op.get("relax.call_tir")):
            callee = expr.args[0]
            calls[callee.name_hint] = calls.get(callee.name_hint, 0) + 1

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    out = []
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and not is_scheduled(func):
            out.append((gv.name_hint, func, calls.get(gv.name_hint, 1)))

    def cost(item):
        try:
            from tvm.s_tir.analysis import estimate_tir_flops

            return float(estimate_tir_flops(task_module(item[1]))) * item[2]
        except Exception:
            return 0.0

    return sorted(out, key=cost, reverse=True)


def _trace_key(trace) -> str:
    return str(trace)


def _ranked_ms(run_secs) -> float:
    """A record's time as MetaSchedule ranks records (``get_top_k``): the mean of its timings
    (here at every thread count measured), so the reported best is never above the default."""
    vals = [float(x) for x in run_secs]
    return sum(vals) / len(vals) * 1e3


def _record(sch, workload, secs, target, task):
    from tvm.s_tir import meta_schedule as ms

    return ms.database.TuningRecord(
        trace=sch.trace,
        workload=workload,
        run_secs=[float(s) for s in secs],
        target=target,
        args_info=ms.arg_info.ArgInfo.from_prim_func(task["main"]),
    )


class _Progress:
    """A one-line progress bar on a terminal (nothing when stderr is a file or pipe)."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.n = label, total, 0
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def step(self) -> None:
        self.n += 1
        if self.tty and self.total:
            width = 24
            fill = int(width * self.n / self.total)
            rate = (time.perf_counter() - self.t0) / self.n
            eta = rate * (self.total - self.n)
            sys.stderr.write(f"\r[edgert] {self.label} [{'#' * fill}{'.' * (width - fill)}] {self.n}/{self.total} ~{eta:.0f}s ")
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.total:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class _measurer:
    """Context manager giving ``measure(task, schedules) -> {schedule: (run_secs, error)}``."""

    def __init__(self, tgt, options: TuneOptions, log: Log = _stderr):
        self.tgt, self.options, self.log = tgt, options, log
        self._exit = None

    def __enter__(self):
        from tvm.s_tir import meta_schedule as ms

        evaluator = ms.runner.EvaluatorConfig(
            number=self.options.number, repeat=self.options.repeat, min_repeat_ms=20, enable_cpu_cache_flush=False
        )
        if self.options.device is None and self.options.tracker is None:
            # This machine: build and time in-process; MetaSchedule's worker processes cost
            # seconds per candidate here, more than the measurement itself.
            self._threads = self._thread_counts()
            return self._local_measure
        from edgert.compiler import rpc

        cm = rpc.remote_measurement(
            self.tgt, device=self.options.device, tracker=self.options.tracker, key=self.options.key, evaluator_config=evaluator
        )
        builder, runner = cm.__enter__()
        self._exit = cm.__exit__
        target = self.tgt.tvm_target()

        def measure(task, schedules, step=lambda: None):
            from tvm.s_tir import meta_schedule as ms

            inputs = [ms.builder.BuilderInput(s.mod, target) for s in schedules]
            built = builder.build(inputs)
            out, run_inputs, run_scheds = {}, [], []
            args_info = ms.arg_info.ArgInfo.from_prim_func(task["main"])
            for s, b in zip(schedules, built, strict=True):
                if b.error_msg:
                    out[s] = (None, "build failed: " + _last_line(b.error_msg))
                    continue
                run_inputs.append(ms.runner.RunnerInput(b.artifact_path, device_type="cpu", args_info=args_info))
                run_scheds.append(s)
            futures = runner.run(run_inputs) if run_inputs else []
            for s, fut in zip(run_scheds, futures, strict=True):
                r = fut.result()
                if r.error_msg:
                    out[s] = (None, "run failed: " + _last_line(r.error_msg))
                else:
                    out[s] = ([float(x) for x in r.run_secs], None)
                step()
            for b in built:
                if b.artifact_path:
                    Path(b.artifact_path).unlink(missing_ok=True)
            return out

        return measure

    def _local_measure(self, task, schedules, step=lambda: None):
        import numpy as np
        import tvm
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        from edgert.compiler import tir_lowering

        target = self.tgt.tvm_target()
        dev = tvm.cpu()
        config = tvm.get_global_func("runtime.config_threadpool")
        out = {}
        for s in schedules:
            try:
                # Weight repacking runs once at compile time, not per call: time the kernel only.
                mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(s.mod)
                lib = tvm.compile(mod, target=target, tir_pipeline=tir_lowering.register())
            except Exception as exc:
                out[s] = (None, "build failed: " + _last_line(exc))
                continue
            try:
                args = _random_args(mod["main"], dev, np)
                timer = lib.mod.time_evaluator(
                    "main", dev, number=self.options.number, repeat=self.options.repeat, min_repeat_ms=20
                )
                secs = []
                for n in self._threads:
                    config(0, n)
                    secs += list(timer(*args).results)
                out[s] = (secs, None)
            except Exception as exc:
                out[s] = (None, "run failed: " + _last_line(exc))
            step()
        return out

    def _thread_counts(self) -> tuple[int, ...]:
        import os

        # TVM's pool never grows past the count it starts with, and on x86 that defaults to half
        # the cores (it assumes hyper-threads): ask for all of them before its first parallel
        # call, unless the user chose a count with TVM_NUM_THREADS.
        env = os.environ.get("TVM_NUM_THREADS", "")
        cores = int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)
        counts = tuple(sorted(set(self.options.threads or (1, cores))))
        if any(n < 1 or n > cores for n in counts):
            raise TuningError(f"--threads {','.join(map(str, counts))}: each count must be 1..{cores} "
                              "(this machine's cores, or TVM_NUM_THREADS when set)")
        os.environ.setdefault("TVM_NUM_THREADS", str(cores))
        import tvm

        tvm.get_global_func("runtime.config_threadpool")(0, max(counts))
        pool = int(tvm.get_global_func("runtime.NumThreads")())
        if pool < max(counts):
            counts = tuple(n for n in counts if n <= pool)
            self.log(f"[edgert] timing at {','.join(map(str, counts))} thread(s) only: TVM's thread pool in this process "
                     f"started with {pool}; run edgert tune in a fresh process (or set TVM_NUM_THREADS) to time more")
        return counts

    def __exit__(self, *exc):
        if self._exit is not None:
            return self._exit(*exc)
        return False


def _random_args(func, dev, np):
    """Random tensors matching the PrimFunc's parameters (MetaSchedule's argument info)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    rng = np.random.default_rng(0)
    args = []
    for info in ms.arg_info.ArgInfo.from_prim_func(func):
        shape = [int(d) for d in info.shape]
        dtype = str(info.dtype)
        if dtype.startswith("float"):
            arr = rng.standard_normal(shape).astype(dtype)
        else:
            arr = rng.integers(0, 4, shape).astype(dtype)
        args.append(tvm.runtime.tensor(arr, dev))
    return args


def _last_line(exc) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


__all__ = [
    "TuneOptions",
    "TuneReport",
    "tune",
    "default_databases",
    "user_database_dir",
    "shipped_database_dir",
    "apply_database",
    "open_database",
]
