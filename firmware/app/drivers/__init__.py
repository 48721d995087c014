# Sensor drivers: pure decoders from raw readings (ADC counts, UART bytes, I2C words) to
# engineering values. No I/O here: the classes read the HAL and hand the bytes/counts over, so
# every decoder is tested with byte vectors on the MicroPython unix port.
