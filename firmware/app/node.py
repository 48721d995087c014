# The node application: owns the register bank, samples the sensor class on its period, keeps
# the identity/health block current, persists thresholds, and serves Modbus RTU on the RS-485
# UART. Same code on ESP32 and on the unix port; only the HAL differs.
#
# Frame boundaries follow the Modbus serial-line rule: a frame ends after a silence of 3.5
# character times (t3.5; a fixed 1750 us above 19200 baud). Sampling never runs while a frame is
# being received, so a sensor read cannot stretch the gap and split a request.

import gc
import time

from app import hwdef, store
from app.modbus import Slave
from app.regbank import RegBank
from app.version import VERSION

_CLASS_TYPES = {"fire": "Fire", "flood": "Flood", "water": "Water", "air": "Air"}
_GC_THRESHOLD = 4096  # collect after this many bytes allocated: keeps the heap peak small


def t35_us(baud):
    if baud > 19200:
        return 1750
    return (35 * 11 * 1000000) // (10 * baud) + 1


def _load_class(name):
    module = __import__("app.classes." + name, None, None, [_CLASS_TYPES[name]])
    return getattr(module, _CLASS_TYPES[name])


class Node:
    def __init__(self, hal, class_name, address, slot_state=None):
        self.hal = hal
        self.bank = bank = RegBank(class_name)
        self.data_dir = hal.root + "data/"
        store.makedirs(self.data_dir)
        self._config_path = self.data_dir + "config.json"
        self._warning_mask = hwdef.class_map(class_name)["warning_mask"]
        self._status_bit = hwdef.STATUS_BITS
        self._commands = hwdef.COMMANDS
        self.slot_state = slot_state or {}
        self.config_error = False
        self._load_config()
        self.boot_count = self._count_boot()
        self.sensor = _load_class(class_name)(hal, bank)
        self.slave = Slave(address, bank, self._on_write)
        self.reboot_pending = False
        self.alarm_seq = 0
        self._prev_alarms = 0
        self._uptime_ms = 0
        self._last_tick = hal.ticks_ms()
        bank.set("map_version", hwdef.MAP_VERSION)
        bank.set("device_class", bank.class_id)
        bank.set("fw_major", VERSION[0])
        bank.set("fw_minor", VERSION[1])
        bank.set("fw_patch", VERSION[2])
        bank.set("boot_count", self.boot_count & 0xFFFF)
        self._update_status()

    # -- persistence --------------------------------------------------------------------
    def _load_config(self):
        try:
            stored = store.read(self._config_path)
        except store.CorruptRecord:
            self.config_error = True  # run on factory thresholds and say so in status bit 6
            return
        if stored and stored.get("class") == self.bank.class_name:
            if self.bank.apply_config(stored.get("holding", {})):
                self.config_error = True

    def save_config(self):
        store.write(self._config_path, {"class": self.bank.class_name,
                                        "holding": self.bank.config()})

    def _count_boot(self):
        path = self.data_dir + "boot.json"
        try:
            record = store.read(path) or {}
        except store.CorruptRecord:
            record = {}
        count = record.get("boots", 0) + 1
        try:
            store.write(path, {"boots": count})
        except OSError:
            pass  # a full or failing flash must not stop the node from booting
        return count

    # -- Modbus writes ------------------------------------------------------------------
    def _on_write(self, kind, start, count):
        if kind == "coil":
            self.hal.set_outputs(self.bank.coils)
            return
        if start == 0:
            command = self.bank.holding[0]
            self.bank.holding[0] = 0  # the command register always reads 0
            self._run_command(command)
            if count == 1:
                return
        try:
            self.save_config()
            self.config_error = False
        except OSError:
            self.config_error = True
            raise  # the master gets exception 04: the new value is live but not saved
        finally:
            self._update_status()  # the status word answers for the write at once

    def _run_command(self, command):
        cmds = self._commands
        if command == cmds["reset"]:
            self.sensor.reset()
            self._prev_alarms = 0
        elif command == cmds["reboot"]:
            self.reboot_pending = True
        elif command == cmds["factory"]:
            self.bank.load_defaults()
            self.save_config()
        elif command == cmds["confirm_image"]:
            confirm = self.slot_state.get("confirm")
            if confirm:
                confirm()
                self.slot_state["trial"] = False

    # -- status -------------------------------------------------------------------------
    def _update_status(self):
        sensor = getattr(self, "sensor", None)
        alarms = sensor.alarm_bits if sensor else 0
        faults = sensor.fault_bits if sensor else 0
        bits = self._status_bit
        status = 0
        if alarms & ~self._warning_mask:
            status |= 1 << bits["alarm"]
        if alarms & self._warning_mask:
            status |= 1 << bits["warning"]
        if faults:
            status |= 1 << bits["fault"]
        if sensor is not None and sensor.latched:
            status |= 1 << bits["latched"]
        if self.slot_state.get("trial"):
            status |= 1 << bits["trial"]
        if self.slot_state.get("ota"):
            status |= 1 << bits["ota"]
        if self.config_error:
            status |= 1 << bits["config_error"]
        raised = alarms & ~self._prev_alarms
        while raised:  # one step per alarm raised, so two alarms in one sample count two
            self.alarm_seq = (self.alarm_seq + (raised & 1)) & 0xFFFF
            raised >>= 1
        self._prev_alarms = alarms
        bank = self.bank
        bank.input[5] = status
        bank.set("alarm_bits", alarms)
        bank.set("fault_bits", faults)
        bank.set("alarm_seq", self.alarm_seq)
        if sensor is not None:
            bank.set("sensor_errors", sensor.errors & 0xFFFF)

    def sample(self, now_ms):
        self._uptime_ms += time.ticks_diff(now_ms, self._last_tick)
        self._last_tick = now_ms
        self.sensor.sample(now_ms)
        self._update_status()
        bank = self.bank
        bank.set("uptime", self._uptime_ms // 1000)

    # -- the loop -----------------------------------------------------------------------
    def run(self):
        hal = self.hal
        gc.collect()
        gc.threshold(_GC_THRESHOLD)
        gap_us = t35_us(hal.baud)
        buf = bytearray(256)
        view = memoryview(buf)
        n = 0
        overflow = False
        last_rx_us = 0
        next_sample = time.ticks_ms()
        while True:
            hal.wdt_feed()
            if n:
                # A frame is arriving: wait out the rest of the silent interval, precisely.
                remaining = gap_us - time.ticks_diff(time.ticks_us(), last_rx_us)
                if remaining >= 1000:
                    got = hal.uart_wait(remaining // 1000)
                elif remaining > 0:
                    time.sleep_us(remaining)
                    got = hal.uart_wait(0)
                else:
                    got = hal.uart_wait(0)
                if not got and time.ticks_diff(time.ticks_us(), last_rx_us) >= gap_us:
                    if not overflow:
                        reply = self.slave.handle(buf, n)
                        if reply is not None:
                            hal.uart_write(reply)
                        if self.reboot_pending:  # after the reply (none for a broadcast)
                            hal.reboot()
                    n = 0
                    overflow = False
                    continue
            else:
                wait = time.ticks_diff(next_sample, time.ticks_ms())
                got = hal.uart_wait(wait if wait > 0 else 0)
            if got:
                if n >= len(buf):
                    n = 0  # longer than any Modbus frame: noise; drop it whole at the gap
                    overflow = True
                n += hal.uart_readinto(view[n:])
                last_rx_us = time.ticks_us()
                continue
            now = time.ticks_ms()
            if not n and time.ticks_diff(now, next_sample) >= 0:
                self.sample(now)
                hal.gc_point()
                period = int(self.bank.threshold("sample_period"))
                next_sample = time.ticks_add(next_sample, period)
                if time.ticks_diff(next_sample, now) < 0:
                    next_sample = time.ticks_add(now, period)  # fell behind: don't burst


def main(root, slot_state=None):
    """Entry point called by the slot picker in main.py."""
    import json

    from app import hal as hal_mod

    # data/node.json is written by the technician's provisioning tool (or the simulator):
    # {"class": "fire", "address": 1, "baud": 19200, "board": "...", "uart": "/dev/pts/N"}
    with open(root + "data/node.json") as fh:
        node_cfg = json.load(fh)
    hal = hal_mod.make(root, node_cfg)
    node = Node(hal, node_cfg.get("class", "fire"), node_cfg.get("address", 1), slot_state)
    node.run()
