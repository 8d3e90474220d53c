"""Device specs: every form parses into its typed config; bad ones name the fix."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgert.device.adb import ADBConfig
from edgert.device.serial import SerialConfig
from edgert.device.specs import DeviceSpecError, open_device, parse
from edgert.device.ssh import SSHConfig


def test_good_specs(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("")
    assert parse("local") == "local" and parse("qemu") == "qemu"
    assert parse("ssh://pi@board:2222") == SSHConfig(host="board", user="pi", port=2222)
    assert parse("ssh://board") == SSHConfig(host="board")
    assert parse(f"ssh://pi@10.0.0.5?workdir=/opt/e&config={cfg}") == SSHConfig(
        host="10.0.0.5", user="pi", workdir="/opt/e", config_file=cfg)
    assert parse("adb") == ADBConfig()
    assert parse("adb:emulator-5554") == ADBConfig(serial="emulator-5554")
    assert parse("adb:192.168.1.7:5555?workdir=/data/local/tmp/x") == ADBConfig(serial="192.168.1.7:5555",
                                                                                 workdir="/data/local/tmp/x")
    assert parse("serial:///dev/ttyUSB0") == SerialConfig(port="/dev/ttyUSB0")
    assert parse("serial:///dev/ttyACM1?baud=921600&workdir=/root/e") == SerialConfig(
        port="/dev/ttyACM1", baud=921600, workdir="/root/e")
    assert SerialConfig(port="/dev/ttyS0", baud=9600).spec == "serial:///dev/ttyS0?baud=9600"
    assert SSHConfig(host="h", user="u", port=22).spec == "ssh://u@h:22"


@pytest.mark.parametrize("spec, fix", [
    ("pi@board", "ssh://pi@board"),
    ("ssh:pi@board", "ssh://USER@HOST"),
    ("ssh://pi@board:99999", "1 to 65535"),
    ("ssh://pi@board:abc", "1 to 65535"),
    ("ssh://pi@", "names no host"),
    ("ssh://pi@board/opt/x", "?workdir=/opt/x"),
    ("ssh://pi@board?port=2", "takes: workdir, config"),
    ("ssh://pi@board?config=/nonexistent/ssh_config", "fix the config= option"),
    ("adb:", "serial after 'adb:'"),
    ("adb:bad serial", "copy it from 'adb devices'"),
    ("serial:/dev/ttyUSB0", "serial:///dev/ttyUSB0?baud=115200"),
    ("serial://dev/ttyUSB0", "three slashes, e.g. serial:///dev/dev/ttyUSB0"),
    ("serial:///dev/ttyUSB0?baud=fast", "baud must be a positive whole number"),
    ("serial:///dev/ttyUSB0?baud=", "needs a value"),
    ("/dev/ttyUSB0", "serial:///dev/ttyUSB0?baud=115200"),
    ("jetson", "use local, qemu, ssh://USER@HOST[:PORT], adb[:SERIAL] or serial:///dev/ttyUSB0"),
    ("", "use local, qemu"),
])
def test_bad_specs_name_the_fix(spec, fix):
    with pytest.raises(DeviceSpecError) as err:
        open_device(spec)
    assert fix in str(err.value)
    assert err.value.exit_code == 2


def test_missing_serial_port_names_the_fix(tmp_path):
    from edgert.device.transport import TransportClosed

    with pytest.raises(TransportClosed, match=r"check the port name .*dialout"):
        open_device(f"serial://{tmp_path / 'ttyUSB9'}")


def test_open_local_devices():
    dev = open_device("local")
    assert dev.name == "local" and dev.host_files and Path(dev.workdir()).is_dir()
    dev.close()
