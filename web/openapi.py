"""Print the OpenAPI document: ``python -m web.openapi > openapi.json``.

The committed ``openapi.json`` is what client teams read; a test regenerates it and compares, so the file
can never drift from the code.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from settings import Settings
from web.app import create_app

# The spec does not depend on secrets, but the app refuses to start without key material.
_SPEC_SETTINGS = dataclasses.replace(Settings(), jwt_secret="openapi-generation-only-never-verifies-tokens")  # noqa: S106


def openapi_document() -> dict[str, Any]:
    app = create_app(_SPEC_SETTINGS)
    with app.app_context():
        return app.extensions["api"].spec.to_dict()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")  # noqa: T201
