"""Bounded scalar types shared by the API schemas and routes.

Database keys are 32-bit on PostgreSQL (``integer``) and SQLite refuses integers beyond 64 bits:
an unbounded ``int`` from a client would reach the driver and fail as a 500. Bounding it here
turns that into a 422 at the boundary. Likewise text: PostgreSQL refuses NUL characters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field

__all__ = ["MAX_ID", "NO_NUL", "Id", "IdPath", "IdQuery", "Offset", "QueryText", "Tag"]

MAX_ID = 2**31 - 1
#: Text without NUL characters: PostgreSQL cannot store them, so they are refused up front.
NO_NUL = r"^[^\x00]*$"

#: A database key inside a request body.
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
#: A database key in the path.
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
#: A database key as a query filter.
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
#: A free-text query filter.
QueryText = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]
#: A device tag.
Tag = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]
#: A page offset.
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
