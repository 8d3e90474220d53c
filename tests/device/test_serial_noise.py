"""The serial transport over a line that damages bytes (noisy_line.NoisyLine between the transport
and the serial_console fixture's shell): what it can repeat it repeats, what it cannot it reports
as TransportCorrupted naming the line, and nothing damaged is taken for good."""
from __future__ import annotations

import posixpath
from pathlib import Path

import numpy as np
import pytest
from noisy_line import NoisyLine

from edgert.bundle import Bundle
from edgert.device.deploy import bundle_digest, deploy
from edgert.device.local import LocalDevice
from edgert.device.serial import SerialConfig, SerialTransport
from edgert.device.transport import TransportCorrupted
from edgert.errors import EdgertError
from edgert.runtime.session import run_deployed, run_on_device


@pytest.fixture
def line(serial_console):
    noisy = NoisyLine(serial_console, seed=11)
    yield noisy
    noisy.stop()


def open_line(line: NoisyLine, tmp_path, **kw) -> SerialTransport:
    # Short waits: over a pseudo-terminal an answer that has not come within 2 s is lost.
    return SerialTransport(SerialConfig(port=line.path, workdir=str(tmp_path / "device"), ack_timeout=2.0,
                                        sync_timeout=8.0, **kw))


def test_files_cross_a_noisy_line_both_ways(line, tmp_path):
    dev = open_line(line, tmp_path, chunk_bytes=4096)
    line.set_rates(up=5e-5, down=5e-5)
    data = np.random.default_rng(0).integers(0, 256, 6 * 4096 + 77, dtype=np.uint8).tobytes()
    (tmp_path / "x.bin").write_bytes(data)
    remote = f"{dev.workdir()}/x.bin"
    for _ in range(3):
        dev.push(tmp_path / "x.bin", remote)
        dev.pull(remote, tmp_path / "back.bin")
        assert (tmp_path / "device" / "x.bin").read_bytes() == data
        assert (tmp_path / "back.bin").read_bytes() == data
    # The premise: the line did damage both ways, and the transport noticed and repeated.
    assert line.up.damaged > 0 and line.down.damaged > 0 and dev.damaged > 0
    assert sorted(p.name for p in (tmp_path / "device").iterdir()) == ["x.bin"]  # no part or chunk files left
    dev.close()


def test_deploy_and_run_over_a_slightly_noisy_line(line, tiny_bundle, tmp_path):
    bundle = Bundle.open(tiny_bundle("host"))
    # 8 KiB chunks: at this rate about 1 send in 40 is damaged, so 4 damaged sends of one chunk in a row
    # (the retry bound) would take a far worse line.
    dev = open_line(line, tmp_path, chunk_bytes=8192)
    line.set_rates(up=2e-6, down=2e-6)
    dep = deploy(bundle, dev)  # its golden check ran on the device and matched
    assert dep.checked and line.up.damaged > 0 and dev.chunks_resent > 0
    assert Bundle.open(dep.remote_dir).manifest == bundle.manifest  # every file arrived whole
    x = np.random.default_rng(3).standard_normal(bundle.inputs[0].shape).astype(np.float32)
    there = run_on_device(bundle, dev, {"input": x}).outputs
    here = run_on_device(bundle, LocalDevice(), {"input": x}).outputs
    for name in here:
        np.testing.assert_array_equal(there[name], here[name])  # bit-exact: same code, same input
    dev.close()


def test_a_very_noisy_line_fails_the_deploy_and_leaves_no_bundle(line, tiny_bundle, tmp_path):
    bundle = Bundle.open(tiny_bundle("host"))
    dev = open_line(line, tmp_path)
    dev.arch  # noqa: B018 (asked while the line is clean, as at the start of any session)
    # About 13 damaged bytes in every 32 KiB chunk sent; short commands (1-2 KB) get through after
    # a re-send or two, so the deploy gets as far as sending files.
    line.set_rates(up=3e-4)
    with pytest.raises(TransportCorrupted) as err:
        deploy(bundle, dev, timeout=60)
    assert type(err.value) is TransportCorrupted and dev.name in str(err.value) and "lower the baud rate" in str(err.value)
    assert "pushing" in str(err.value) and "times in a row" in str(err.value)
    root = tmp_path / "device" / "bundles"
    final = root / bundle_digest(bundle)
    assert not final.exists()  # nothing under the final name
    line.set_rates(up=0, down=0)
    partial = posixpath.join(dev.workdir(), "bundles", f".{bundle_digest(bundle)}.partial")
    if Path(partial).exists():  # what did arrive is not a bundle the runner accepts
        with pytest.raises(EdgertError):
            run_deployed(bundle, dev, partial)
    assert not final.exists()
    dev.close()


def test_run_is_not_repeated_when_its_reply_is_damaged(line, tmp_path):
    dev = open_line(line, tmp_path)
    marks = tmp_path / "marks"
    # Only replies are damaged (the command arrives whole): its ~14 KB of output surely, each short
    # end-of-reply line (one of three needed) seldom.
    line.set_rates(down=1e-3)
    with pytest.raises(TransportCorrupted, match="not run again") as err:
        dev.run(["sh", "-c", 'echo ran >> "$1"; seq 1 3000', "sh", str(marks)], timeout=30)
    assert dev.name in str(err.value)
    assert marks.read_text() == "ran\n"  # it ran exactly once: not repeated
    line.set_rates(down=0)
    assert dev.run(["echo", "still here"]).stdout == "still here\n"  # the console recovered
    assert marks.read_text() == "ran\n"
    dev.close()


def test_a_command_damaged_on_the_way_out_never_runs(line, tmp_path):
    # Every command is checked on the device before it runs: a damaged one is refused there and
    # sent again (safe for run too, as it never started), so it runs once, as sent.
    dev = open_line(line, tmp_path, retries=12)
    marks = tmp_path / "marks"
    line.set_rates(up=1.5e-3)  # most sends of this ~1 KB command (as base64) arrive damaged
    script = 'echo "$2" >> "$1"'
    done = dev.run(["sh", "-c", script, "sh", str(marks), "x" * 400])
    assert done.returncode == 0 and dev.damaged > 0 and line.up.damaged > 0
    assert marks.read_text() == "x" * 400 + "\n"
    dev.close()
