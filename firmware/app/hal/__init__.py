# Hardware abstraction: one implementation per board, the same application code above it.
#
# Every HAL offers: uart_wait(timeout_ms) -> bool, uart_readinto(buf) -> int, uart_write(data),
# adc(channel) -> counts (calibrated, 0..vref = 0..4095), sensor_uart_read(name) -> bytes,
# i2c_write(addr, cmd), i2c_read(addr, cmd, n) -> bytes (both raise OSError on a NACK),
# set_outputs(coils), wdt_feed(), reboot(), and the attributes root (filesystem root with a
# trailing slash) and baud.
import sys


def make(root, node_cfg):
    if sys.platform == "esp32":
        from app.hal.esp32 import Hal
    else:
        from app.hal.unix import Hal
    return Hal(root, node_cfg)
