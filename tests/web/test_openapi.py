"""The committed openapi.json is exactly what ``python -m web.openapi`` generates."""

from __future__ import annotations

import json
import re
from pathlib import Path

from web.openapi import openapi_document, render

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_committed_openapi_file_is_up_to_date():
    committed = (REPO_ROOT / "openapi.json").read_text()

    assert committed == render(), "openapi.json is stale: run `python -m web.openapi > openapi.json`"


def test_every_operation_documents_auth_and_errors():
    document = openapi_document()

    assert any(path.startswith("/internal/") for path in document["paths"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert operation["security"] == [{"bearerAuth": []}], (path, method)
            assert {"401", "403"} <= set(map(str, operation["responses"])), (path, method)
            assert operation.get("summary"), (path, method)


def test_served_spec_matches_the_generated_one(client):
    served = client.get("/openapi.json").get_json()

    assert json.dumps(served, sort_keys=True) == json.dumps(openapi_document(), sort_keys=True)


def test_swagger_ui_is_served_by_the_api_itself(client):
    """/docs must work offline: the page's scripts and styles come from the API, not from a CDN."""
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(assets)
    assert not [asset for asset in assets if "://" in asset]
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.data) > 1000, asset
    # The package's own module sits next to the assets directory: a path out of it must not reach it.
    for escape in ("../__init__.py", "..%2f__init__.py", "%2e%2e/flask_swagger_ui.py"):
        assert client.get(f"/docs/assets/{escape}").status_code == 404, escape
