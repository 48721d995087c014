# The node application: owns the register bank, samples the sensor class on its period, keeps
# the identity/health block current, persists thresholds, and serves Modbus RTU on the RS-485
# UART. Same code on ESP32 and on the unix port; only the HAL differs.
#
# Frame boundaries follow the Modbus serial-line rule: a frame ends after a silence of 3.5
# character times (t3.5; a fixed 1750 us above 19200 baud), measured on the time each chunk of
# bytes was read (modbus.Receiver).
#
# The loop's promises, whatever the bus does:
# - the duties (sampling, alarm logic, status) keep their schedule: a frame in reception may
#   postpone them by at most the longest Modbus frame, so a stuck transmitter cannot stop fire
#   detection;
# - the node keeps listening while it samples: between sample steps and inside any wait the HAL
#   makes for a peripheral (hal.on_idle), so a slow sample does not merge two frames; a request
#   for us that completes meanwhile is answered when the step ends;
# - the loop wakes at least twice per watchdog period, even with a 60 s sample period, and feeds
#   the watchdog only while the duties keep their schedule.

import gc
import time

from app import hwdef, store
from app.modbus import Receiver, Slave
from app.regbank import RegBank
from app.version import VERSION

_CLASS_TYPES = {"fire": "Fire", "flood": "Flood", "water": "Water", "air": "Air"}
_GC_THRESHOLD = 4096  # collect after this many bytes allocated: keeps the heap peak small
_MAX_POSTPONE_MS = 100  # the longest a frame in reception may postpone due duties
_SLOT_CHECK_MS = 30000  # how often the OTA/trial flags are re-read from the slot record


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
        self.slot_state = slot_state = slot_state or {}
        self._wdt = slot_state.get("wdt")
        self._wdt_ms = slot_state.get("wdt_ms", 0)
        self.slot_flags = {}
        self._refresh_slot_flags()
        self._next_slot_check = time.ticks_add(hal.ticks_ms(), _SLOT_CHECK_MS)
        self._gap_us = gap_us = t35_us(hal.baud)
        self._gap_ms = (gap_us + 999) // 1000
        self.rx = Receiver(gap_us)
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
        hal.gc_point()  # heap high-water of the boot: imports, config read, boot-count write

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
            try:
                self._run_command(command)
            finally:
                self._refresh_slot_flags()  # the status word says what the flash says
                self._update_status()
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

    def _refresh_slot_flags(self):
        """trial / ota / rolled_back as the slot record says now (main.py reads it)."""
        status = self.slot_state.get("status")
        if status is None:
            return
        try:
            self.slot_flags = status()
        except Exception:  # noqa: BLE001 - a flash error must not stop the node
            pass

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
        flags = self.slot_flags
        if flags.get("trial"):
            status |= 1 << bits["trial"]
        if flags.get("ota"):
            status |= 1 << bits["ota"]
        if flags.get("rolled_back"):
            status |= 1 << bits["rolled_back"]
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
        """The node's duties, in steps that each return to the bus (see _listen)."""
        self._clock(now_ms)
        self.sensor.sample(now_ms)
        self._listen(0)
        self._update_status()
        self._listen(0)
        if time.ticks_diff(now_ms, self._next_slot_check) >= 0:
            self._next_slot_check = time.ticks_add(now_ms, _SLOT_CHECK_MS)
            self._refresh_slot_flags()
            self._listen(0)
        self.hal.gc_point()

    def _clock(self, now_ms):
        self._uptime_ms += time.ticks_diff(now_ms, self._last_tick)
        self._last_tick = now_ms
        self.bank.set("uptime", self._uptime_ms // 1000)

    # -- the bus ------------------------------------------------------------------------
    def _handle(self, frame, n):
        reply = self.slave.handle(frame, n)
        if reply is not None:
            self.hal.uart_write(reply)
            self.hal.gc_point()  # heap high-water after a request (writes save to flash)
        if self.reboot_pending:  # after the reply (none for a broadcast)
            self.hal.reboot()

    def _listen(self, timeout_ms):
        """Keep receiving while the duties run (between sample steps, and inside any wait the
        HAL makes for a peripheral, up to timeout_ms): chunks are timestamped as they come, a
        frame is cut at its silence, and one addressed to us is held until the step ends."""
        hal = self.hal
        rx = self.rx
        for _ in range(4):  # bounded: a babbling bus must not keep a sample step waiting
            self._cut_during_duties()
            wait = timeout_ms
            if (rx.n or rx.overflow) and wait > self._gap_ms:
                wait = self._gap_ms  # wake in time to see this frame's end
            if not hal.uart_wait(wait if wait > 0 else 0):
                break
            rx.took(hal.uart_readinto(rx.space()), time.ticks_us(), time.ticks_ms())
            timeout_ms = 0  # return after a read: the HAL's wait recomputes its deadline
        self._cut_during_duties()

    def _cut_during_duties(self):
        rx = self.rx
        if rx.complete(time.ticks_us()):
            if rx.overflow or rx.buf[0] not in (self.slave.address, 0):
                self.slave.handle(rx.buf, 0 if rx.overflow else rx.n)  # count it; no answer
                rx.clear()
            else:
                rx.hold()

    def _feed(self):
        if self._wdt is not None:
            self._wdt.feed()
        self.hal.wdt_feed()

    # -- the loop -----------------------------------------------------------------------
    def run(self):
        hal = self.hal
        rx = self.rx
        gc.collect()
        gc.threshold(_GC_THRESHOLD)
        hal.on_idle = self._listen  # a HAL that waits on a peripheral keeps the bus meanwhile
        # A frame in reception may postpone due duties (the node keeps listening while it
        # samples, but a step that computes longer than t3.5 could stretch a gap) by at most the
        # longest Modbus frame, and never by more than 100 ms: a babbling transmitter cannot
        # hold the sampling off for longer than that.
        max_frame_ms = (256 * 11 * 1000) // hal.baud + self._gap_ms + 1
        if max_frame_ms > _MAX_POSTPONE_MS:
            max_frame_ms = _MAX_POSTPONE_MS
        # Wake at least twice per watchdog period even when the sample period is longer.
        wake_ms = self._wdt_ms // 2 if self._wdt_ms else 1000
        next_sample = time.ticks_ms()
        while True:
            now = time.ticks_ms()
            late = time.ticks_diff(now, next_sample)
            if late >= 0 and (rx.n == 0 or time.ticks_diff(now, rx.first_ms) >= max_frame_ms):
                self.sample(now)
                period = int(self.bank.threshold("sample_period"))
                next_sample = time.ticks_add(next_sample, period)
                now = time.ticks_ms()
                if time.ticks_diff(next_sample, now) < 0:
                    next_sample = time.ticks_add(now, period)  # fell behind: don't burst
                late = time.ticks_diff(now, next_sample)
            # The watchdog is fed only while the duties keep their schedule: a loop that is
            # busy with the bus but no longer samples lets the watchdog reset the board.
            if late < max_frame_ms:
                self._feed()
                self._clock(now)  # uptime stays current between long sample periods
            if rx.held_n:
                n = rx.held_n
                rx.held_n = 0
                self._handle(rx.held, n)
            if rx.complete(time.ticks_us()):
                if rx.overflow:
                    rx.clear()  # longer than any Modbus frame: noise, dropped whole
                else:
                    n = rx.n
                    rx.n = 0
                    self._handle(rx.buf, n)
                continue
            wait = -late if late < 0 else 0
            if wait > wake_ms:
                wait = wake_ms
            if rx.n or rx.overflow:
                # A frame is arriving: wait out the rest of its silent interval, precisely.
                remaining = self._gap_us - time.ticks_diff(time.ticks_us(), rx.last_us)
                if remaining < 1000:
                    if remaining > 0:
                        time.sleep_us(remaining)
                    wait = 0
                elif remaining // 1000 < wait:
                    wait = remaining // 1000
            if hal.uart_wait(wait):
                rx.took(hal.uart_readinto(rx.space()), time.ticks_us(), time.ticks_ms())


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
