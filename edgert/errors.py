"""Errors edgert raises for user-facing problems.

Every message names what was wrong and how to fix it; the CLI prints it on
one line and exits with ``exit_code``.
"""
from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line errors wrapping third-party ones."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class EdgertError(Exception):
    """Base class: a problem the user can fix. The message says how."""

    exit_code = 1


class MissingDependencyError(EdgertError):
    """An optional package or system tool is not installed."""

    exit_code = 3


class ModelError(EdgertError):
    """The model file cannot be read, parsed or understood."""

    exit_code = 2


class UnsupportedOperatorError(ModelError):
    """The model uses operators the compiler cannot handle."""


class DynamicShapeError(ModelError):
    """An input has a dimension that must be pinned with --input-shape."""


class TargetError(EdgertError):
    """Unknown or invalid target description."""

    exit_code = 2


class ToolchainError(EdgertError):
    """A compiler, linker or runtime library for the target is missing or failed."""

    exit_code = 3


class CompileError(EdgertError):
    """TVM failed to compile the model."""

    exit_code = 4


class TuningError(CompileError):
    """Tuning could not measure candidates (build or run failures), or was set up wrongly."""


class BundleError(EdgertError):
    """The bundle is malformed, from an unknown format version, or incomplete."""

    exit_code = 5


class BundleIntegrityError(BundleError):
    """A bundle file does not match the hash in its manifest."""


class ArchMismatchError(BundleError):
    """The bundle was built for an architecture this device cannot run."""


class TargetMismatchError(ArchMismatchError):
    """Right architecture, wrong target: a GPU bundle without the GPU, CPU features the device
    lacks, or a board other than the one the device is declared to be (?target=)."""


class InputError(EdgertError):
    """An input file or array does not match what the model expects."""

    exit_code = 2


class RunError(EdgertError):
    """Running the bundle failed on the device."""

    exit_code = 6


class CheckFailedError(EdgertError):
    """The outputs differ from the reference beyond tolerance."""

    exit_code = 7


class CompressError(EdgertError):
    """A compression pass cannot apply its spec to this model."""

    exit_code = 2


class CalibrationError(CompressError):
    """Calibration data is missing, unreadable or does not match the model's inputs."""
