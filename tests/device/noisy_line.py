"""A serial line that damages bytes: a relay between a serial port (a tty path, such as the
serial_console fixture's) and a fresh pseudo-terminal that the transport opens instead.

Each byte is damaged with probability ``up`` (towards the device) or ``down`` (back from it):
dropped, or one of its bits flipped. Seeded, so a test sees the same damage at the same byte
counts each run. The rates may be changed while it runs.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import os
import random
import select
import threading
import tty


class _Noise:
    """Damage for one direction: the gap to the next damaged byte is drawn (geometric), so a clean
    byte costs nothing."""

    def __init__(self, rate: float, seed: int, drop_share: float):
        self.rng, self.rate, self.drop_share = random.Random(seed), rate, drop_share
        self.flipped = self.dropped = 0
        self._gap = self._draw()

    def _draw(self) -> float:
        if self.rate <= 0:
            return math.inf
        if self.rate >= 1:
            return 0
        return int(math.log(1.0 - self.rng.random()) / math.log(1.0 - self.rate))

    def set_rate(self, rate: float) -> None:
        self.rate = rate
        self._gap = self._draw()

    def apply(self, data: bytes) -> bytes:
        out = bytearray()
        i = 0
        while i < len(data):
            if self._gap >= len(data) - i:
                self._gap -= len(data) - i
                out += data[i:]
                break
            j = i + int(self._gap)
            out += data[i:j]
            if self.rng.random() < self.drop_share:
                self.dropped += 1
            else:
                out.append(data[j] ^ (1 << self.rng.randrange(8)))
                self.flipped += 1
            i = j + 1
            self._gap = self._draw()
        return bytes(out)

    @property
    def damaged(self) -> int:
        return self.flipped + self.dropped


class Relay(threading.Thread):
    """Copies bytes both ways between two non-blocking descriptors, like a null-modem cable;
    ``damage`` maps a descriptor to a function applied to what is read from it."""

    def __init__(self, a: int, b: int, damage: dict | None = None):
        super().__init__(daemon=True)
        self.a, self.b, self.damage = a, b, damage or {}
        self.stop_r, self.stop_w = os.pipe()
        for fd in (a, b):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)

    def run(self) -> None:
        pending = {self.a: b"", self.b: b""}  # bytes waiting to be written to each side
        peer = {self.a: self.b, self.b: self.a}
        while True:
            writers = [fd for fd, data in pending.items() if data]
            readable, writable, _ = select.select([self.a, self.b, self.stop_r], writers, [])
            if self.stop_r in readable:
                return
            for fd in readable:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:  # the far end is gone
                    return
                pending[peer[fd]] += self.damage[fd](data) if fd in self.damage else data
            for fd in writable:
                with contextlib.suppress(BlockingIOError):
                    n = os.write(fd, pending[fd])
                    pending[fd] = pending[fd][n:]

    def stop(self) -> None:
        os.write(self.stop_w, b"x")
        self.join(timeout=5)
        for fd in (self.stop_r, self.stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class NoisyLine(Relay):
    def __init__(self, port: str, up: float = 0.0, down: float = 0.0, seed: int = 0, drop_share: float = 0.5):
        self.up, self.down = _Noise(up, seed, drop_share), _Noise(down, seed + 1, drop_share)
        self.far = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.far)  # bytes pass as they are; the far shell's own tty does the line discipline
        self.master, self._slave = os.openpty()  # the slave stays open here so the master never reads EIO
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)  # what the transport opens
        # Damage by the side the bytes were read from: the transport's (up) or the device's (down).
        super().__init__(self.master, self.far, {self.master: self.up.apply, self.far: self.down.apply})
        self.start()

    def set_rates(self, up: float | None = None, down: float | None = None) -> None:
        if up is not None:
            self.up.set_rate(up)
        if down is not None:
            self.down.set_rate(down)

    def stop(self) -> None:
        super().stop()
        for fd in (self.far, self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
