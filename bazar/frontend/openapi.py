"""The front end's OpenAPI document (``openapi.json`` next to this module), read once.

The JSON file is the contract of the public API; the front end serves it as is at
``GET /openapi.json``, and the tests check that it matches the routes and the answers.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

FILENAME = "openapi.json"


@cache
def document_bytes() -> bytes:
    """The document exactly as shipped (UTF-8 JSON), to serve with ``application/json``."""
    return files("bazar.frontend").joinpath(FILENAME).read_bytes()


def document() -> dict[str, Any]:
    """The document, parsed (a new copy on each call, so callers may change it)."""
    parsed: dict[str, Any] = json.loads(document_bytes())
    return parsed
