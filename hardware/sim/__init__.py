"""The simulator: virtual sensors with physics and noise, raw encoders, scenario files.

``encoders`` turns physical truth into exactly what the real parts emit (ADC counts, PMS5003
frames, SCD41 responses); ``physics`` holds one virtual sensor per device class; ``scenario``
loads ``hardware/scenarios/*.toml`` and plays their events onto the sensors.
"""

from hardware.sim.physics import (
    SENSOR_CLASSES,
    AirSensor,
    FireSensor,
    FloodSensor,
    VirtualSensor,
    WaterSensor,
    make_sensor,
    validate_action,
)

__all__ = [
    "SENSOR_CLASSES",
    "AirSensor",
    "FireSensor",
    "FloodSensor",
    "VirtualSensor",
    "WaterSensor",
    "make_sensor",
    "validate_action",
]
