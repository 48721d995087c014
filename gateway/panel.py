"""A fire panel's alarm state: which conditions are raised, under which ids, and what ends them.

The pure core between the panel's printer port (:mod:`gateway.lineproto`, events in) and the
outbox (messages out). It owns three rules:

- **One id per occurrence.** A raising event (fire, prealarm, supervisory, fault) at a place
  (``kind:zone:point``) that is not already active raises it under a new ``alarm_id``; the same
  line printed again while it is active (panels re-print on acknowledge) raises nothing.
- **What a restore ends.** A restore names the kind it ends (``clears`` in the profile: "CLR TBL"
  ends a fault, "CLR ALM" a fire) or, without ``clears``, any raising kind; it ends the active
  conditions of that kind at the same zone and point. A system reset ends all of them.
- A restore or reset that ends nothing known (it was raised before the gateway listened) is
  passed on as a plain event, because it is still evidence for the operator.
- **Ids that never repeat** for a panel and never depend on the clock:
  ``<panel>:<kind>:<zone>:<point>:<n>``, where ``n`` counts the panel's raises. The counter is
  part of the state, a plain JSON-able dict (:meth:`PanelAlarms.snapshot`), which the service
  persists before it stores the messages that carry the id, so a restart continues the count.

No I/O: the service feeds :class:`~gateway.lineproto.PanelEvent` objects in and turns the
returned :class:`PanelEdge` objects into MQTT messages and rule actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gateway.lineproto import PanelEvent

__all__ = ["RAISING", "PanelAlarms", "PanelEdge"]

#: Event kinds that raise a condition (lineproto's ``raised`` action).
RAISING = frozenset({"fire", "prealarm", "supervisory", "fault"})


@dataclass(frozen=True)
class PanelEdge:
    """One change the world must hear about: an alarm raised or cleared, or a plain event."""

    state: Literal["raised", "cleared", "event"]
    kind: str  # the alarm's kind (fire, fault, ...) or, for "event", the event's kind
    alarm_id: str | None
    zone: str | None
    point: str | None
    event: PanelEvent


def _place(key: str) -> tuple[str, str]:
    _, zone, point = key.split(":", 2)
    return zone, point


def _optional(part: str) -> str | None:
    return None if part == "-" else part


class PanelAlarms:
    """The active conditions of one panel; ``apply`` one event at a time."""

    def __init__(self, device_id: str, state: dict[str, Any] | None = None):
        self.device_id = device_id
        state = state or {}
        self.raised: int = int(state.get("raised", 0))  # raises ever made: the id counter
        self.active: dict[str, str] = {str(k): str(v)
                                       for k, v in dict(state.get("active", {})).items()}

    def snapshot(self) -> dict[str, Any]:
        """The state to persist (and pass back to ``__init__`` after a restart)."""
        return {"raised": self.raised, "active": dict(self.active)}

    def apply(self, event: PanelEvent) -> list[PanelEdge]:
        action = event.action
        if action == "raised":
            if event.key in self.active:
                return []  # the panel re-printed a condition it already reported
            self.raised += 1
            alarm_id = f"{self.device_id}:{event.key}:{self.raised}"
            self.active[event.key] = alarm_id
            return [PanelEdge("raised", event.kind, alarm_id, event.zone, event.point, event)]
        if action in ("cleared", "cleared_all"):
            place = (event.zone or "-", event.point or "-")
            ends = [key for key in self.active
                    if action == "cleared_all"
                    or ((event.clears is None or key.split(":", 1)[0] == event.clears)
                        and _place(key) == place)]
            edges = []
            for key in ends:
                zone, point = _place(key)
                edges.append(PanelEdge("cleared", key.split(":", 1)[0], self.active.pop(key),
                                       _optional(zone), _optional(point), event))
            if edges:
                return edges
            # a restore of something raised before the gateway listened: still evidence
        return [PanelEdge("event", event.kind, None, event.zone, event.point, event)]
