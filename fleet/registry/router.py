"""HTTP for the registry: areas, sites, gateways, devices, CSV import/export. Thin: it parses,
checks the role, and calls :mod:`fleet.registry.service`, which scopes everything to the
caller's area subtree."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, status
from fastapi.responses import PlainTextResponse

from fleet.auth.rbac import Permission, Principal
from fleet.core.deps import SessionDep, require
from fleet.core.errors import Forbidden
from fleet.core.types import NO_NUL, IdPath, IdQuery, Offset, QueryText
from fleet.registry import service
from fleet.registry.models import Area, Device, Gateway, Site
from fleet.registry.schemas import (
    AreaCreate,
    AreaMove,
    AreaOut,
    AreaOutlineSet,
    DeviceCreate,
    DeviceOut,
    DevicePage,
    DeviceUpdate,
    GatewayCreate,
    GatewayOut,
    ImportResult,
    SiteCreate,
    SiteOut,
)

router = APIRouter(tags=["registry"])
Reader = Annotated[Principal, Depends(require(Permission.READ))]
Registrar = Annotated[Principal, Depends(require(Permission.MANAGE_REGISTRY))]
AreaAdmin = Annotated[Principal, Depends(require(Permission.MANAGE_AREAS))]


@router.get("/areas", response_model=list[AreaOut])
def list_areas(user: Reader, session: SessionDep) -> list[Area]:
    return service.list_areas(session, user)


@router.post("/areas", response_model=AreaOut, status_code=status.HTTP_201_CREATED)
def create_area(body: AreaCreate, user: AreaAdmin, session: SessionDep) -> Area:
    service.check_area_parent(session, user, body.parent_id)
    return service.create_area(session, name=body.name, kind=body.kind,
                               parent_id=body.parent_id, code=body.code, outline=body.outline,
                               actor=f"user:{user.username}")


@router.get("/areas/{area_id}", response_model=AreaOut)
def get_area(area_id: IdPath, user: Reader, session: SessionDep) -> Area:
    return service.get_area(session, user, area_id)


@router.put("/areas/{area_id}/outline", response_model=AreaOut)
def set_area_outline(area_id: IdPath, body: AreaOutlineSet, user: AreaAdmin,
                     session: SessionDep) -> Area:
    """The area's boundary (GeoJSON Polygon or MultiPolygon), drawn on the dashboard's map;
    ``{"outline": null}`` removes it. A geometry that is not one answers 422 saying where."""
    return service.set_area_outline(session, user, area_id, body.outline,
                                    actor=f"user:{user.username}")


@router.post("/areas/{area_id}/move", response_model=AreaOut)
def move_area(area_id: IdPath, body: AreaMove, user: AreaAdmin, session: SessionDep) -> Area:
    area = service.get_area(session, user, area_id)
    if area.path == user.area_path:
        raise Forbidden("an admin may not move the area their own scope starts at")
    service.check_area_parent(session, user, body.parent_id)
    return service.move_area(session, area_id, body.parent_id, actor=f"user:{user.username}")


@router.get("/sites", response_model=list[SiteOut])
def list_sites(user: Reader, session: SessionDep) -> list[Site]:
    return service.list_sites(session, user)


@router.post("/sites", response_model=SiteOut, status_code=status.HTTP_201_CREATED)
def create_site(body: SiteCreate, user: Registrar, session: SessionDep) -> Site:
    return service.create_site(session, user, name=body.name, area_id=body.area_id,
                               latitude=body.latitude, longitude=body.longitude,
                               address=body.address)


@router.get("/gateways", response_model=list[GatewayOut])
def list_gateways(user: Reader, session: SessionDep) -> list[Gateway]:
    return service.list_gateways(session, user)


@router.post("/gateways", response_model=GatewayOut, status_code=status.HTTP_201_CREATED)
def create_gateway(body: GatewayCreate, user: Registrar, session: SessionDep) -> Gateway:
    return service.create_gateway(session, user, key=body.key, name=body.name,
                                  site_id=body.site_id)


@router.get("/devices", response_model=DevicePage)
def list_devices(user: Reader, session: SessionDep,
                 area_id: IdQuery = None, site_id: IdQuery = None,
                 gateway: QueryText = None,
                 device_class: Annotated[str | None, Query(alias="class", pattern=NO_NUL)] = None,
                 connectivity: Literal["online", "offline", "unknown"] | None = None,
                 tag: QueryText = None, unassigned: bool | None = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Offset = 0) -> DevicePage:
    flt = service.DeviceFilter(area_id=area_id, site_id=site_id, gateway=gateway,
                               device_class=device_class, connectivity=connectivity, tag=tag,
                               unassigned=unassigned)
    total, items = service.list_devices(session, user, flt, limit=limit, offset=offset)
    return DevicePage(total=total, items=[DeviceOut.model_validate(d) for d in items])


@router.post("/devices", response_model=DeviceOut, status_code=status.HTTP_201_CREATED)
def create_device(body: DeviceCreate, user: Registrar, session: SessionDep) -> Device:
    return service.create_device(session, user, gateway_id=body.gateway_id, key=body.key,
                                 device_class=body.device_class, name=body.name,
                                 address=body.address, site_id=body.site_id, tags=body.tags)


@router.get("/devices/export.csv", response_class=PlainTextResponse,
            responses={200: {"content": {"text/csv": {}}}})
def export_devices(user: Reader, session: SessionDep) -> PlainTextResponse:
    return PlainTextResponse(service.export_devices_csv(session, user), media_type="text/csv")


@router.post("/devices/import", response_model=ImportResult)
def import_devices(user: Registrar, session: SessionDep,
                   body: Annotated[str, Body(media_type="text/csv")]) -> dict[str, int]:
    """Register or update devices from CSV; all or nothing, errors numbered by file line."""
    return service.import_devices_csv(session, user, body)


@router.get("/devices/{device_id}", response_model=DeviceOut)
def get_device(device_id: IdPath, user: Reader, session: SessionDep) -> Device:
    return service.get_device(session, user, device_id)


@router.patch("/devices/{device_id}", response_model=DeviceOut)
def update_device(device_id: IdPath, body: DeviceUpdate, user: Registrar,
                  session: SessionDep) -> Device:
    return service.update_device(session, user, device_id, body.model_dump(exclude_unset=True))

