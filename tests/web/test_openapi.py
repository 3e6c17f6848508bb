"""The committed openapi.json is exactly what ``python -m web.openapi`` generates."""

from __future__ import annotations

import json
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
