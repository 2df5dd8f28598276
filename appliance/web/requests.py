"""Type aliases for Litestar's generic connection types, as every handler here uses them."""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar import Request
from litestar.connection import ASGIConnection

__all__ = ["AnyConnection", "AnyRequest"]

AnyRequest: TypeAlias = Request[Any, Any, Any]
AnyConnection: TypeAlias = ASGIConnection[Any, Any, Any, Any]
