"""HTTP for webhooks (admins): subscribe an outside system, list, disable, see deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from sqlalchemy import select

from fleet.auth.rbac import Permission, Principal
from fleet.core.deps import SessionDep, SettingsDep, require
from fleet.core.errors import NotFound
from fleet.core.types import IdPath
from fleet.notify import webhooks
from fleet.notify.models import WebhookDelivery, WebhookSubscription
from fleet.notify.schemas import DeliveryOut, WebhookCreate, WebhookCreated, WebhookOut
from fleet.notify.sealed import SecretBox

router = APIRouter(prefix="/webhooks", tags=["notify"])
Admin = Annotated[Principal, Depends(require(Permission.MANAGE_WEBHOOKS))]


@router.get("", response_model=list[WebhookOut])
def list_webhooks(_: Admin, session: SessionDep) -> list[WebhookSubscription]:
    return list(session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id)))


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED)
def create_webhook(body: WebhookCreate, admin: Admin, session: SessionDep,
                   settings: SettingsDep) -> WebhookCreated:
    """Subscribe an outside system. The answer carries the HMAC secret: the only time it is
    shown (it is stored sealed and never returned again)."""
    box = SecretBox(settings.secret_key.get_secret_value())
    sub, secret = webhooks.create_subscription(
        session, box, name=body.name, url=body.url, classes=list(body.classes),
        secret=body.secret, actor=f"user:{admin.username}")
    return WebhookCreated(**WebhookOut.model_validate(sub).model_dump(), secret=secret)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def disable_webhook(webhook_id: IdPath, admin: Admin, session: SessionDep) -> None:
    webhooks.delete_subscription(session, webhook_id, f"user:{admin.username}")


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryOut])
def list_deliveries(webhook_id: IdPath, _: Admin, session: SessionDep) -> list[WebhookDelivery]:
    if session.get(WebhookSubscription, webhook_id) is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return list(session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.subscription_id == webhook_id).order_by(WebhookDelivery.id.desc())
        .limit(200)))
