"""Swagger UI's own files, served by the API itself, so ``/docs`` works without reaching a CDN.

The files come from the pinned ``flask-swagger-ui`` package (its ``dist`` directory is the swagger-ui-dist
release it names); flask-smorest's ``/docs`` page loads them from :data:`ASSETS_URL`. Like ``/docs`` and
``/openapi.json``, they need no token: they hold nothing but the viewer.
"""

from __future__ import annotations

from importlib.resources import files

from flask import Blueprint, Flask, Response, send_from_directory

ASSETS_URL = "/docs/assets/"
_SWAGGER_UI_DIST = str(files("flask_swagger_ui") / "dist")
_CACHE_SECONDS = 24 * 3600


def init_docs_assets(app: Flask) -> None:
    blueprint = Blueprint("docs_assets", __name__)

    @blueprint.get(ASSETS_URL + "<path:filename>")
    def swagger_ui_asset(filename: str) -> Response:
        return send_from_directory(_SWAGGER_UI_DIST, filename, max_age=_CACHE_SECONDS)

    app.register_blueprint(blueprint)
