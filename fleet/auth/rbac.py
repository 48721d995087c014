"""Who may do what, said once as data, and what a user may see, as pure functions.

A role says which actions a user may take (a table, not an if-chain); an area subtree says where.
Everything outside the subtree is invisible (404, never 403, so existence is not leaked).
Fire devices and their alarms are hidden from the utility role unless the user is granted them.

Admins are scoped like everyone else: a ward's admin manages that ward's subtree and sees nothing
outside it. A city-level admin is simply an admin scoped to the root (``area_path`` None, what
``create-admin`` makes). What has no area, or spans every area, is the root admin's alone:
devices with no area ("unassigned", auto-created when first seen on MQTT), the audit log, the
fleet-wide metrics and the webhooks (they send every area's alarms to outside systems), see
:data:`ROOT_ONLY`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ROLES", "ROLE_PERMISSIONS", "ROOT_ONLY", "Permission", "Principal", "Role", "allowed",
           "can_see", "in_subtree", "permits"]


class Role(StrEnum):
    ADMIN = "admin"
    TECHNICIAN = "technician"
    UTILITY = "utility"
    FIRE_SAFETY = "fire-safety"
    VIEWER = "viewer"


ROLES = tuple(r.value for r in Role)


class Permission(StrEnum):
    READ = "read the registry and alarms"
    MANAGE_REGISTRY = "change areas, sites, gateways and devices"
    MANAGE_AREAS = "change the area tree"
    ACK_ALARMS = "acknowledge or resolve alarms"
    MANAGE_USERS = "manage users and tokens"
    READ_AUDIT = "read the audit log"
    MANAGE_WEBHOOKS = "manage webhooks to outside systems"
    MANAGE_OTA = "upload firmware releases and run update campaigns"


_ALL = frozenset(Permission)
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    Role.ADMIN.value: _ALL,
    Role.TECHNICIAN.value: frozenset({Permission.READ, Permission.MANAGE_REGISTRY,
                                      Permission.ACK_ALARMS, Permission.MANAGE_OTA}),
    Role.UTILITY.value: frozenset({Permission.READ, Permission.ACK_ALARMS}),
    Role.FIRE_SAFETY.value: frozenset({Permission.READ, Permission.ACK_ALARMS}),
    Role.VIEWER.value: frozenset({Permission.READ}),
}

#: Permissions over things that belong to no area (or to all): only a root-scoped user holds
#: them, whatever the role grants.
ROOT_ONLY = frozenset({Permission.READ_AUDIT, Permission.MANAGE_WEBHOOKS})

#: The device class whose devices and alarms the utility role sees only when granted.
FIRE_CLASS = "fire"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user, possibly acting through an API token.

    ``area_path`` is the materialised path of the user's area ("/1/7/"); None means the whole
    tree (every area, but unassigned devices still only for admins)."""

    user_id: int
    username: str
    role: str
    area_path: str | None
    fire_granted: bool = False
    token_id: int | None = None
    must_change_password: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value

    @property
    def is_root(self) -> bool:
        """Scoped to the whole tree."""
        return self.area_path is None

    @property
    def sees_unassigned(self) -> bool:
        """Devices and gateways with no area yet: the root admin's to place."""
        return self.is_admin and self.is_root

    @property
    def sees_fire(self) -> bool:
        return self.role != Role.UTILITY.value or self.fire_granted


def allowed(role: str, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def permits(user: Principal, permission: Permission) -> bool:
    """The role grants ``permission`` and, for a :data:`ROOT_ONLY` one, the user's scope is the
    whole tree."""
    return allowed(user.role, permission) and (permission not in ROOT_ONLY or user.is_root)


def in_subtree(scope: str | None, area_path: str | None) -> bool:
    """Is an object with ``area_path`` inside a user's ``scope``? Unassigned (None) is not."""
    if area_path is None:
        return False
    return scope is None or area_path.startswith(scope)


def can_see(user: Principal, area_path: str | None, device_class: str | None) -> bool:
    if device_class == FIRE_CLASS and not user.sees_fire:
        return False
    if area_path is None:
        return user.sees_unassigned
    return in_subtree(user.area_path, area_path)
