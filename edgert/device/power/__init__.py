"""Power sources on devices (sysfs rails, RAPL counters, external meters) and energy per inference."""
from edgert.device.power.energy import RailEnergy, Trace, rail_energy
from edgert.device.power.sources import PowerSource, PowerSourceError, parse_power_arg, target_sources

__all__ = ["PowerSource", "PowerSourceError", "RailEnergy", "Trace", "parse_power_arg", "rail_energy", "target_sources"]
