"""Payload models: the Node producers' camelCase JSON, validated at the edge by the dispatcher."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
"""An identifier from the identity service: short, printable, no spaces."""
Email = Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class Payload(BaseModel):
    """Fields are named as the producers send them (camelCase); unknown fields are ignored, so a
    producer may add fields before we read them."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=False,
        extra="ignore",
        frozen=True,
        str_strip_whitespace=True,
    )
