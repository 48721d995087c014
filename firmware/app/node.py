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

import record as store  # the flash record format, shared with the slot picker (/record.py)
from app import hwdef
from app.modbus import Slave
from app.regbank import RegBank, class_map
from app.version import VERSION

_CLASS_TYPES = {"fire": "Fire", "flood": "Flood", "water": "Water", "air": "Air"}
_GC_THRESHOLD = 2048  # collect after this many bytes allocated: the heap peak is live + this
_MAX_POSTPONE_MS = 100  # the longest a frame in reception may postpone due duties
_SLOT_CHECK_MS = 30000  # how often the OTA/trial flags are re-read from the slot record
_TRIAL_CONFIRM_S = 900  # a trial not confirmed after this much uptime resets the board


def t35_us(baud):
    if baud > 19200:
        return 1750
    return (35 * 11 * 1000000) // (10 * baud) + 1


def _unload(name):
    """Drop app.<name> so its code leaves the heap at the next collection."""
    import sys

    import app
    if sys.modules.pop("app." + name, None) is not None:
        delattr(app, name)


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
        self._warning_mask = class_map(class_name)["warning_mask"]
        self._status_bit = hwdef.STATUS_BITS
        self._commands = hwdef.COMMANDS
        # slot_state from main.py: {"slot": "a", "wdt": <watchdog>, "wdt_ms": 8000}
        self.slot_state = slot_state = slot_state or {}
        self._wdt_ms = slot_state.get("wdt_ms", 0)
        # data/node.json's "trial_confirm_s" (app/start.py), else 15 minutes; 0: no deadline
        # (a site that confirms by hand). It must stay above the gateway's confirm time
        # (gateway.confirm_trial_after_s, 300 s by default), or no trial is ever confirmed.
        self._confirm_by_ms = slot_state.get("confirm_s", _TRIAL_CONFIRM_S) * 1000
        self.slot_flags = {}
        self._refresh_slot_flags()
        self._next_slot_check = time.ticks_add(hal.ticks_ms(), _SLOT_CHECK_MS)
        # The receiver: the frame being received (buf[:n]), when its first and last chunks
        # were read, whether it outgrew any Modbus frame (noise), and a frame for us held while
        # a sample step runs.
        self._gap_us = t35_us(hal.baud)
        self._buf = bytearray(256)
        self._view = memoryview(self._buf)
        self._n = 0
        self._over = False
        self._first_ms = self._last_us = 0
        self._held = bytearray(256)
        self._held_n = 0
        self._busy = False
        self.config_error = False
        # Boot-only work is app/start.py's (dropped from the heap before the loop runs): the
        # stored thresholds, the boot counter, and the OTA window's input block (hwdef.OTA_BASE
        # up; its writes go to app/ota_offer.py and app/ota_rx.py, loaded only then).
        from app import start
        start.load_config(self)
        self.boot_count = start.count_boot(self.data_dir)
        self.ota_inputs = start.ota_inputs(self.data_dir)
        self._ota_rx = None
        self.sensor = _load_class(class_name)(hal, bank)
        self.slave = Slave(address, bank, self._on_write)
        self.slave.ota = self
        self.reboot_pending = False
        self.after_reply = None   # slow work the answer need not wait for (an OTA checkpoint)
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
    def save_config(self):
        store.write(self._config_path, {"class": self.bank.class_name,
                                        "holding": self.bank.config()})

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
            self._refresh_slot_flags(True)

    def ota_write(self, offset, count, frame, at):
        """A write into the OTA window, handed over unparsed by the Slave; 0 or an exception
        code. Its code comes into the heap with the writes, never at boot: an offer's
        (app/ota_offer.py) for that offer only, the receiver's (app/ota_rx.py) from the first
        chunk or control write on. The two are never loaded together."""
        if offset == 0:
            self._ota_rx = None
            _unload("ota_rx")   # it re-reads the record after the offer
            gc.collect()   # the code's blocks are contiguous: free the garbage's holes first
            from app import ota_offer
            code = ota_offer.offer(self, count, frame, at)
            _unload("ota_offer")
        else:
            rx = self._ota_rx
            if rx is None:
                gc.collect()
                from app import ota_rx as rx
                self._ota_rx = rx
            state = self.ota_inputs[0]
            code = rx.write(self, offset, count, frame, at)
            if self.ota_inputs[0] == state:
                return code   # a chunk: the status word (its OTA bit) is unchanged
        self._update_status()
        return code

    # -- the slot record (/slots.json, written by the picker at boot: see /picker.py) -------
    def _refresh_slot_flags(self, confirm=False):
        """trial / ota / rolled_back as the slot record says now, for the status word; with
        confirm, first clear the trial flag of the running image (the gateway's confirm)."""
        path = self.hal.root + "slots.json"
        try:
            stored = store.read(path) or {}
        except Exception:  # noqa: BLE001 - a damaged record or a flash error: no flags
            stored = {}
        mine = stored.get("active") == self.slot_state.get("slot")
        if confirm and mine and stored.get("trial") is True:
            stored["trial"] = False
            stored["tries"] = 0
            store.write(path, stored)  # OSError: the master hears exception 04
        self.slot_flags = {
            "trial": mine and stored.get("trial") is True,
            "ota": stored.get("pending") in ("a", "b"),  # staged, waits for the next boot
            "rolled_back": stored.get("rolled_back") is True,
        }

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
        if flags.get("ota") or self.ota_inputs[0] in (1, 2):  # staged, receiving, verifying
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
        """The node's duties, in steps that each return to the bus (see _bus)."""
        self._busy = True
        self._clock(now_ms)
        self.sensor.sample(now_ms)
        self._bus(0)
        self._update_status()
        self._bus(0)
        if time.ticks_diff(now_ms, self._next_slot_check) >= 0:
            self._next_slot_check = time.ticks_add(now_ms, _SLOT_CHECK_MS)
            self._refresh_slot_flags()
            self._bus(0)
        if (self.slot_flags.get("trial") and self._confirm_by_ms
                and self._uptime_ms >= self._confirm_by_ms):
            self._trial_deadline()
        self.hal.gc_point()
        self._busy = False

    def _trial_deadline(self):
        """A trial image that has run its confirm-by time without the gateway's confirm (the
        gateway is gone, or cannot confirm this image) resets the board: the picker counts the
        boot, and after its MAX_TRIES boots rolls back to the old slot, as for a trial that
        crashes or hangs. A reset rather than a roll-back from here: the picker stays the one
        place that decides slots, and a gateway that was only away gets the next boots to
        confirm. Never during a fire: while an alarm is active or latched the deadline is
        postponed (checked again at every sample). A reset would drop the latched alarm and
        take the detector off the bus for a boot, and the image that is reporting the fire is
        evidently detecting; the deadline runs out once the alarm is cleared (command 1)."""
        sensor = self.sensor
        if sensor.latched or sensor.alarm_bits & ~self._warning_mask:
            return
        self._refresh_slot_flags()  # the flash has the last word: a confirm may have come
        if not self.slot_flags.get("trial"):
            return
        print("trial: not confirmed within %d s of uptime: reset"
              % (self._confirm_by_ms // 1000))
        self.hal.reboot()

    def _clock(self, now_ms):
        self._uptime_ms += time.ticks_diff(now_ms, self._last_tick)
        self._last_tick = now_ms
        self.bank.set("uptime", self._uptime_ms // 1000)

    # -- the bus ------------------------------------------------------------------------
    def _handle(self, frame, n):
        reply = self.slave.handle(frame, n)
        if reply is not None:
            self.hal.uart_write(reply)
        job = self.after_reply
        if job is not None:  # after the reply: the master's t3.5 and next frame run meanwhile
            self.after_reply = None
            job(self)
        if reply is not None:
            self.hal.gc_point()  # heap high-water after a request (writes save to flash)
        if self.reboot_pending:  # after the reply (none for a broadcast)
            self.hal.reboot()

    def _bus(self, timeout_ms):
        """One turn of the receiver: wait up to timeout_ms for bytes (no longer than the frame
        in reception needs to show its silence), cut that frame once t3.5 has passed since its
        last chunk, then take the new bytes with the time they came.

        A cut frame is answered at once; while the duties run (self._busy: between sample
        steps, and inside any wait the HAL makes for a peripheral, hal.on_idle) one for us is
        held and answered when the step ends, another node's is only counted."""
        if self._n or self._over:
            left = self._gap_us - time.ticks_diff(time.ticks_us(), self._last_us)
            if 0 < left < 1000 and not self._busy:
                time.sleep_us(left)  # the end of the silence, precisely
                left = 0
            if left // 1000 < timeout_ms:
                timeout_ms = left // 1000 if left > 0 else 0
        got = self.hal.uart_wait(timeout_ms)
        now = time.ticks_us()
        if (self._n or self._over) and time.ticks_diff(now, self._last_us) >= self._gap_us:
            n = self._n
            self._n = 0
            buf = self._buf
            if self._over:
                self._over = False  # longer than any Modbus frame: noise, dropped whole
            elif self._busy and buf[0] in (self.slave.address, 0):
                self._held[:n] = self._view[:n]  # a retry of it replaces it
                self._held_n = n
            else:
                self._handle(buf, n)
        if got:
            n = self._n
            if n >= len(self._buf):
                n = 0  # longer than any Modbus frame: noise; dropped whole at the gap
                self._over = True
            if not n and not self._over:
                self._first_ms = time.ticks_ms()
            self._n = n + self.hal.uart_readinto(self._view[n:])
            self._last_us = now

    # -- the loop -----------------------------------------------------------------------
    def run(self):
        hal = self.hal
        gc.collect()
        gc.threshold(_GC_THRESHOLD)
        hal.on_idle = self._bus  # a HAL that waits on a peripheral keeps the bus meanwhile
        # A frame in reception may postpone due duties (the node keeps listening while it
        # samples, but a step that computes longer than t3.5 could stretch a gap) by at most the
        # longest Modbus frame, and never by more than 100 ms: a babbling transmitter cannot
        # hold the sampling off for longer than that.
        postpone_ms = (256 * 11 * 1000) // hal.baud + self._gap_us // 1000 + 2
        if postpone_ms > _MAX_POSTPONE_MS:
            postpone_ms = _MAX_POSTPONE_MS
        # Wake at least twice per watchdog period even when the sample period is longer.
        wake_ms = self._wdt_ms // 2 if self._wdt_ms else 1000
        next_sample = time.ticks_ms()
        while True:
            now = time.ticks_ms()
            late = time.ticks_diff(now, next_sample)
            if late >= 0 and (not self._n or
                              time.ticks_diff(now, self._first_ms) >= postpone_ms):
                self.sample(now)
                # the class may ask for a shorter period while it confirms a reading (fire)
                period = self.sensor.period_ms(int(self.bank.threshold("sample_period")))
                next_sample = time.ticks_add(next_sample, period)
                now = time.ticks_ms()
                if time.ticks_diff(next_sample, now) < 0:
                    next_sample = time.ticks_add(now, period)  # fell behind: don't burst
                late = time.ticks_diff(now, next_sample)
            # The watchdog is fed only while the duties keep their schedule: a loop that is
            # busy with the bus but no longer samples lets the watchdog reset the board.
            if late < postpone_ms:
                hal.wdt_feed()
                self._clock(now)  # uptime stays current between long sample periods
            if self._held_n:
                n = self._held_n
                self._held_n = 0
                self._handle(self._held, n)
            wait = -late
            if wait < 0:
                wait = 0
            elif wait > wake_ms:
                wait = wake_ms
            self._bus(wait)


def main(root, slot_state=None):
    """Entry point called by the slot picker in main.py."""
    from app import start

    node = start.make(root, slot_state, Node)
    start = None
    _unload("start")  # its code leaves the heap before the loop runs
    node.run()
