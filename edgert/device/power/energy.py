"""Energy per inference from the runner's raw power readings.

The runner samples every source through an idle window (the model loaded, nothing running)
and then an active window (the model running back to back). Per source:

    idle power   = energy over the idle window / its length
    excess       = energy over the active window - idle power x its length
    per inference = excess / runs in the active window

Energy over a window is the trapezoid integral of the power readings (each reading at its
timestamp, the window's ends interpolated) or, for counters, the unwrapped counter's difference
between the window's ends (interpolated).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.device.power.sources import PowerSourceError

MIN_READINGS = 5  # per window; fewer and the estimate is mostly interpolation


@dataclass(frozen=True)
class Trace:
    """One source's readings as the runner reported them (times in s since the runner started)."""

    name: str
    kind: str
    scale: float
    max: float
    t: np.ndarray
    raw: np.ndarray

    @classmethod
    def from_runner(cls, d: dict) -> Trace:
        return cls(d["name"], d["kind"], float(d["scale"]), float(d.get("max") or 0.0),
                   np.asarray(d["t_ms"], np.float64) / 1e3, np.asarray(d["value"], np.float64))

    @property
    def counter(self) -> bool:
        return self.kind == "energy"

    def joules_cumulative(self) -> np.ndarray:
        """Counter readings made monotonic (wraps at ``max`` undone) and scaled to joules."""
        steps = np.diff(self.raw)
        if self.max > 0:
            steps = np.where(steps < 0, steps + self.max, steps)
        else:
            steps = np.where(steps < 0, 0.0, steps)  # a reset with no known range: lose that step only
        return np.concatenate([[0.0], np.cumsum(steps)]) * self.scale

    def watts(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, watts) for plots; counters give the mean power between readings, at midpoints."""
        if not self.counter:
            return self.t, self.raw * self.scale
        dt = np.diff(self.t)
        keep = dt > 0
        power = np.diff(self.joules_cumulative())[keep] / dt[keep]
        return ((self.t[1:] + self.t[:-1]) / 2)[keep], power

    def readings_in(self, start: float, end: float) -> int:
        return int(np.count_nonzero((self.t >= start) & (self.t <= end)))

    def energy(self, start: float, end: float) -> float:
        """Joules between two times."""
        if self.counter:
            cumulative = self.joules_cumulative()
            return float(np.interp(end, self.t, cumulative) - np.interp(start, self.t, cumulative))
        watts = self.raw * self.scale
        inside = (self.t > start) & (self.t < end)
        t = np.concatenate([[start], self.t[inside], [end]])
        p = np.concatenate([[np.interp(start, self.t, watts)], watts[inside], [np.interp(end, self.t, watts)]])
        return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(t)))


@dataclass(frozen=True)
class RailEnergy:
    name: str
    idle_w: float  # mean power over the idle window
    active_w: float  # mean power while the model ran
    excess_w: float  # active - idle: what running the model adds
    joules_per_inference: float
    readings: tuple[int, int]  # in the idle and the active window


def rail_energy(trace: Trace, idle: tuple[float, float], active: tuple[float, float], runs: int) -> RailEnergy:
    """Energy per inference of one source; windows in s since the runner started."""
    if len(trace.t) < 2:
        raise PowerSourceError(
            f"power source '{trace.name}' gave {len(trace.t)} reading(s); check that it updates "
            "(a meter stream must write one reading per line)"
        )
    if runs < 1:
        raise PowerSourceError("the energy window held no inference; raise the active time")
    idle_s, active_s = idle[1] - idle[0], active[1] - active[0]
    idle_w = trace.energy(*idle) / idle_s
    active_j = trace.energy(*active)
    active_w = active_j / active_s
    return RailEnergy(
        name=trace.name,
        idle_w=idle_w,
        active_w=active_w,
        excess_w=active_w - idle_w,
        joules_per_inference=(active_j - idle_w * active_s) / runs,
        readings=(trace.readings_in(*idle), trace.readings_in(*active)),
    )
