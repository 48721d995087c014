"""When to confirm a node's trial image: a pure rule, fed with what each status poll decoded.

A node that boots a freshly installed image runs it as a *trial* (identity status bit 3,
``trial``): ``firmware/picker.py`` gives it a few boots, and rolls back to the previous slot
unless someone confirms it by writing ``confirm_image`` (4) to holding register 0. The gateway is
that someone, because it is the one part that watches the node work: it confirms once the node
has answered every poll for ``after_s`` seconds without rebooting (the boot counter unchanged,
uptime still growing). A reboot, a silence or a new trial starts the clock again. A sensor fault
does not block the confirm: it is the sensor's, and the node reports it either way.

``after_s = 0`` turns confirming off (a site that confirms by hand, through the fleet's command).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrialWatch"]


@dataclass
class TrialWatch:
    """One device's trial clock. ``observe`` says True exactly when the confirm is due."""

    after_s: float
    _since: float | None = None  # monotonic time of the first healthy poll of this trial
    _boot: int | None = None
    _uptime: int = 0
    _sent_for_boot: int | None = None

    def observe(self, now: float, *, online: bool, trial: bool, boot_count: int,
                uptime_s: int) -> bool:
        if self.after_s <= 0 or not trial or not online:
            self._since = None
            return False
        if self._boot != boot_count or uptime_s < self._uptime:
            self._since, self._boot = now, boot_count  # a new boot: a new trial clock
        self._uptime = uptime_s
        if self._since is None:
            self._since = now
        if now - self._since < self.after_s or self._sent_for_boot == boot_count:
            return False
        self._sent_for_boot = boot_count  # once per boot; the next poll shows it took
        return True

    def failed(self) -> None:
        """The confirm write did not get through: try again at the next due poll."""
        self._sent_for_boot = None
