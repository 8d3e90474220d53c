"""Devices: transports (local, qemu, ssh, adb, serial) and deploying bundles to them."""
from edgert.device.specs import open_device

__all__ = ["open_device"]
