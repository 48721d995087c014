"""One error type for the whole fleet, rendered as RFC 9457 problem details by one handler.

Services raise :class:`FleetError` (or one of its few subclasses) with the HTTP status it maps
to, a short title and a detail for the operator; they know nothing else of HTTP. The handlers
here also turn FastAPI's validation errors and Starlette's HTTP errors (404 for an unknown path,
405) into the same ``application/problem+json`` shape, so a client parses one format.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "PROBLEM_JSON",
    "Conflict",
    "FleetError",
    "Forbidden",
    "NotFound",
    "Problem",
    "Unauthorized",
    "install_error_handlers",
    "problem_responses",
]

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """RFC 9457 problem details (the members every fleet error carries)."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class FleetError(Exception):
    """An error a client can act on. ``status`` is the HTTP status it becomes at the boundary;
    ``code`` a stable machine-readable reason (becomes the problem ``type``)."""

    status: int = 400
    code: str = "bad-request"

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.extra = extra

    def problem(self, instance: str | None = None) -> Problem:
        return Problem(type=f"urn:edgefleet:problem:{self.code}",
                       title=HTTPStatus(self.status).phrase, status=self.status,
                       detail=self.detail, instance=instance, **self.extra)


class Unauthorized(FleetError):
    status, code = 401, "unauthorized"


class Forbidden(FleetError):
    status, code = 403, "forbidden"


class NotFound(FleetError):
    status, code = 404, "not-found"


class Conflict(FleetError):
    status, code = 409, "conflict"


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json answers for ``statuses``."""
    return {status: {"model": Problem, "description": HTTPStatus(status).phrase,
                     "content": {PROBLEM_JSON: {"schema": {"$ref":
                                                           "#/components/schemas/Problem"}}}}
            for status in statuses}


def _response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(jsonable_encoder(problem.model_dump(exclude_none=True)),
                        status_code=problem.status, media_type=PROBLEM_JSON, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def fleet_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FleetError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _response(exc.problem(request.url.path), headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                   "type": e.get("type", "")} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        problem = Problem(type="urn:edgefleet:problem:validation",
                          title=HTTPStatus(422).phrase, status=422,
                          detail=f"{where}: {first['msg']}", instance=request.url.path)
        problem.errors = errors  # type: ignore[attr-defined]  # an extension member (extra)
        return _response(problem)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _response(Problem(title=HTTPStatus(exc.status_code).phrase,
                                 status=exc.status_code, detail=str(exc.detail),
                                 instance=request.url.path), dict(exc.headers or {}) or None)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _response(Problem(title=HTTPStatus(500).phrase, status=500,
                                 detail="internal error; see the server log",
                                 instance=request.url.path))

    app.add_exception_handler(FleetError, fleet_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
