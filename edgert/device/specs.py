"""Device specs as users write them (``--device``), parsed into typed configs and opened.

    local | qemu | ssh://[USER@]HOST[:PORT][?workdir=DIR&config=SSH_CONFIG&target=NAME]
    adb[:SERIAL][?workdir=DIR&target=NAME] | serial:///dev/ttyUSB0[?baud=115200&workdir=DIR&target=NAME]

target=NAME declares which board (see 'edgert targets') the device is; bundles built for another
board are then refused before anything is sent (edgert.device.compat).
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from edgert.errors import EdgertError

FORMS = "local, qemu, ssh://USER@HOST[:PORT], adb[:SERIAL] or serial:///dev/ttyUSB0[?baud=115200]"


class DeviceSpecError(EdgertError):
    """A --device value that does not parse."""

    exit_code = 2


def open_device(spec: str):
    """The :class:`~edgert.device.transport.Transport` for a spec; DeviceSpecError (naming the fix) if it is bad."""
    config = parse(spec)
    from edgert.device.adb import ADBConfig, ADBTransport
    from edgert.device.serial import SerialTransport
    from edgert.device.ssh import SSHConfig, SSHTransport

    if config == "local":
        from edgert.device.local import LocalDevice

        return LocalDevice()
    if config == "qemu":
        from edgert.device.local import QemuDevice

        return QemuDevice()
    if isinstance(config, SSHConfig):
        return SSHTransport(config)
    if isinstance(config, ADBConfig):
        return ADBTransport(config)
    return SerialTransport(config)


def parse(spec: str):
    """"local", "qemu", or an SSHConfig / ADBConfig / SerialConfig."""
    spec = (spec or "").strip()
    if spec in ("local", "qemu"):
        return spec
    if spec.startswith("ssh:"):
        return _ssh(spec)
    if spec == "adb" or spec.startswith(("adb:", "adb?")):
        return _adb(spec)
    if spec.startswith("serial:"):
        return _serial(spec)
    if spec.startswith("/dev/"):
        raise DeviceSpecError(f"device '{spec}': write a serial port as serial://{spec}?baud=115200")
    if re.fullmatch(r"[\w.-]+@[\w.-]+(:\d+)?", spec):
        raise DeviceSpecError(f"device '{spec}': write an ssh device as ssh://{spec}")
    raise DeviceSpecError(f"unknown device '{spec}'; use {FORMS}")


def _query(spec: str, query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise DeviceSpecError(f"device '{spec}': cannot read the options '?{query}'; write them as ?KEY=VALUE&KEY=VALUE") from None
    options = dict(pairs)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DeviceSpecError(f"device '{spec}': unknown option {', '.join(unknown)}; this device takes: {', '.join(allowed)}")
    empty = [k for k, v in options.items() if not v]
    if empty:
        raise DeviceSpecError(f"device '{spec}': option {empty[0]} needs a value, e.g. {empty[0]}=...")
    return options


def _ssh(spec: str):
    from edgert.device.ssh import SSHConfig

    if not spec.startswith("ssh://"):
        raise DeviceSpecError(f"device '{spec}': write an ssh device as ssh://USER@HOST[:PORT]")
    parts = urlsplit(spec)
    options = _query(spec, parts.query, ("workdir", "config", "target"))
    if parts.path not in ("", "/"):
        raise DeviceSpecError(
            f"device '{spec}': an ssh device has no path; give the device folder as ssh://USER@HOST?workdir={parts.path}"
        )
    try:
        port = parts.port
    except ValueError:
        raise DeviceSpecError(f"device '{spec}': the port must be a number from 1 to 65535, e.g. ssh://pi@board:22") from None
    host = parts.hostname
    if not host:
        raise DeviceSpecError(f"device '{spec}' names no host; write ssh://USER@HOST[:PORT]")
    if port == 0:
        raise DeviceSpecError(f"device '{spec}': the port must be a number from 1 to 65535, e.g. ssh://pi@board:22")
    config = Path(options["config"]).expanduser() if "config" in options else None
    if config is not None and not config.is_file():
        raise DeviceSpecError(f"device '{spec}': ssh config file {config} not found; fix the config= option")
    return SSHConfig(host=host, user=parts.username or None, port=port, workdir=options.get("workdir"), config_file=config,
                     target=_target(options))


def _adb(spec: str):
    from edgert.device.adb import ADBConfig

    head, _, query = spec.partition("?")
    options = _query(spec, query, ("workdir", "target"))
    serial = head[len("adb:"):] if head.startswith("adb:") else ""
    if head.startswith("adb:") and not serial:
        raise DeviceSpecError(f"device '{spec}': give the phone's serial after 'adb:' (see 'adb devices'), or write just adb")
    if serial and not re.fullmatch(r"[\w.:\-]+", serial):
        raise DeviceSpecError(f"device '{spec}': '{serial}' is not an adb serial; copy it from 'adb devices'")
    kw = {"workdir": options["workdir"]} if "workdir" in options else {}
    return ADBConfig(serial=serial or None, target=_target(options), **kw)


def _serial(spec: str):
    from edgert.device.serial import SerialConfig

    if not spec.startswith("serial://"):
        raise DeviceSpecError(f"device '{spec}': write a serial port as serial:///dev/ttyUSB0?baud=115200")
    parts = urlsplit(spec)
    if parts.netloc:
        raise DeviceSpecError(
            f"device '{spec}': the port path needs three slashes, e.g. serial:///dev/{parts.netloc}{parts.path}"
        )
    if not parts.path.startswith("/") or parts.path == "/":
        raise DeviceSpecError(f"device '{spec}' names no port; write serial:///dev/ttyUSB0?baud=115200")
    options = _query(spec, parts.query, ("baud", "workdir", "target"))
    kw = {}
    if "baud" in options:
        if not options["baud"].isdigit() or int(options["baud"]) <= 0:
            raise DeviceSpecError(f"device '{spec}': baud must be a positive whole number such as 115200")
        kw["baud"] = int(options["baud"])
    if "workdir" in options:
        kw["workdir"] = options["workdir"]
    return SerialConfig(port=parts.path, target=_target(options), **kw)


def _target(options: dict[str, str]) -> str | None:
    """?target=NAME, checked against the known boards now (TargetError lists them)."""
    if "target" not in options:
        return None
    from edgert.compiler.targets import load_target

    return load_target(options["target"]).name
