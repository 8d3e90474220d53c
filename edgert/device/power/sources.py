"""Power sources the bundle runner samples on the device, named by the target or by --power.

Four kinds, all plain files (or a serial port) on the device, so the runner reads them with no
driver or Python there:

- ``power``: a file holding the instantaneous power (``/sys/class/power_supply/*/power_now``
  in microwatts, hwmon ``power*_input`` in microwatts, Jetson ``in_power*_input`` in milliwatts);
- ``vi``: a voltage file times a current file (INA3221 rails under hwmon: mV x mA);
- ``energy``: a cumulative counter (RAPL ``energy_uj``), wrapping at ``max``;
- ``stream``: an external meter writing one reading per line (watts x scale) to a serial port
  or a growing file; the first number on each line is taken.

``raw reading x scale`` is watts (joules for ``energy``).
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from edgert.errors import EdgertError

KINDS = ("power", "vi", "energy", "stream")
_KEYS = ("name", "kind", "path", "path2", "scale", "max", "baud")


class PowerSourceError(EdgertError):
    """A power source is badly specified, unreadable on the device, or none is known."""

    exit_code = 2


@dataclass(frozen=True)
class PowerSource:
    name: str
    kind: str
    path: str
    path2: str = ""  # the current file of a "vi" source
    scale: float = 1.0
    max: float = 0.0  # raw value an "energy" counter wraps at (0: read max_energy_range_uj beside it, else none)
    baud: int = 0  # serial port speed of a "stream" source (0: leave the port as it is)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PowerSourceError(f"power source '{self.name}': kind '{self.kind}' is not one of {', '.join(KINDS)}")
        if not self.path or (self.kind == "vi") != bool(self.path2):
            raise PowerSourceError(
                f"power source '{self.name}': give path (and path2, the current file, for kind=vi only)"
            )
        if not self.scale > 0:
            raise PowerSourceError(f"power source '{self.name}': scale must be positive, got {self.scale}")
        # The runner's spec is comma-separated KEY=VALUE.
        for value in (self.name, self.path, self.path2):
            if "," in value:
                raise PowerSourceError(f"power source '{self.name}': '{value}' contains a comma, which the runner cannot take")

    def runner_spec(self) -> str:
        """The ``--energy`` argument of edgert-run."""
        parts = {"name": self.name, "kind": self.kind, "path": self.path, "path2": self.path2,
                 "scale": repr(self.scale), "max": repr(self.max) if self.max else "", "baud": str(self.baud) if self.baud else ""}
        return ",".join(f"{k}={v}" for k, v in parts.items() if v)


# (pattern on the file name, kind, scale): what a bare path most likely measures.
_BY_NAME = (
    (re.compile(r"energy_uj$"), "energy", 1e-6),
    (re.compile(r"power_now$"), "power", 1e-6),
    (re.compile(r"^in_power\d*_input$"), "power", 1e-3),  # Jetson ina3221x driver (JetPack 4/5): mW
    (re.compile(r"^power\d+_(input|average)$"), "power", 1e-6),  # hwmon ABI: uW
)


def parse_power_arg(text: str) -> PowerSource:
    """A ``--power`` value: ``[NAME=]PATH`` (kind and unit told from the file name), or the
    full ``name=..,kind=..,path=..[,path2=..][,scale=..][,max=..][,baud=..]``."""
    text = text.strip()
    if re.search(r"(^|,)kind=", text):
        return _parse_spec(text)
    name, sep, path = text.partition("=")
    if not sep:
        name, path = "", text
    base = posixpath.basename(path)
    if path.startswith("/dev/"):
        return PowerSource(name or base, "stream", path, baud=115200)
    for pattern, kind, scale in _BY_NAME:
        if pattern.search(base):
            return PowerSource(name or _default_name(path), kind, path, scale=scale)
    raise PowerSourceError(
        f"cannot tell what '{path}' measures; give the full spec, e.g. "
        f"--power name=board,kind=power,path={path},scale=1e-6 (kinds: {', '.join(KINDS)})"
    )


def _default_name(path: str) -> str:
    """'intel-rapl:0' for .../intel-rapl:0/energy_uj, 'BAT0' for .../BAT0/power_now."""
    parent = posixpath.basename(posixpath.dirname(path))
    return parent or posixpath.basename(path)


def _parse_spec(text: str) -> PowerSource:
    fields: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not value or key not in _KEYS:
            raise PowerSourceError(f"--power '{text}': '{item}' is not KEY=VALUE with KEY one of {', '.join(_KEYS)}")
        fields[key] = value
    try:
        return PowerSource(
            name=fields.get("name") or _default_name(fields.get("path", "")),
            kind=fields["kind"],
            path=fields.get("path", ""),
            path2=fields.get("path2", ""),
            scale=float(fields.get("scale", 1.0)),
            max=float(fields.get("max", 0.0)),
            baud=int(fields.get("baud", 0)),
        )
    except ValueError:
        raise PowerSourceError(f"--power '{text}': scale and max must be numbers, baud an integer") from None


def target_sources(target) -> tuple[PowerSource, ...]:
    """The rails a target's ``[power]`` table names (voltage in mV x current in mA = uW)."""
    return tuple(PowerSource(r.name, "vi", r.voltage, r.current, scale=1e-6) for r in target.power_rails)
