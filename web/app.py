"""The application factory. Nothing is built at import time: ``web.wsgi`` (gunicorn), the OpenAPI
command and the tests each call :func:`create_app` with the settings they want."""

from __future__ import annotations

from flask import Flask, Response

from settings import Settings, get_settings
from web.admin import register_blueprints as register_admin_blueprints
from web.auth import init_auth
from web.database import init_database
from web.docs_assets import ASSETS_URL as DOCS_ASSETS_URL
from web.docs_assets import init_docs_assets
from web.errors import register_error_handlers
from web.extensions import Api, refuse_nul_in_path
from web.health import init_health
from web.internal import register_blueprints as register_internal_blueprints
from web.json_provider import IsoDateJSONProvider
from web.observability import init_observability
from web.tenancy import init_tenancy

API_TITLE = "Orchestration service"
API_VERSION = "1.0.0"


class OrchestrationFlask(Flask):
    def make_default_options_response(self) -> Response:
        """``OPTIONS``: 204 with ``Allow`` and no body, rather than Flask's empty 200 labelled text/html."""
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    app = OrchestrationFlask("orchestration")
    app.config.update(
        API_TITLE=API_TITLE,
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL=DOCS_ASSETS_URL,
        # Werkzeug answers 413 before the body is parsed (the handler turns it into our JSON error).
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        # Error handlers render every exception, including in tests: a test asserts the 500 body
        # instead of seeing the exception re-raised.
        PROPAGATE_EXCEPTIONS=False,
    )
    # A doubled slash is not quietly rewritten: werkzeug would answer 308 to another URL
    # (/deployments//status -> /deployments/status, then a 404 naming a deployment called "status").
    app.url_map.merge_slashes = False
    app.json = IsoDateJSONProvider(app)
    # Keep the schemas' field order in responses (error: code, message, details) instead of sorting keys.
    app.json.sort_keys = False
    app.extensions["orchestration_settings"] = settings

    init_observability(app)
    init_database(app)
    init_auth(app, settings)
    init_tenancy(app, settings)
    init_health(app, settings)
    init_docs_assets(app)
    app.before_request(refuse_nul_in_path)

    api = Api(
        app,
        spec_kwargs={
            "info": {
                "description": "Runs vLLM model deployments on Kubernetes GPU clusters. Changes are asynchronous "
                'jobs: a POST answers 202 with a job to poll. Errors are {"error": {code, message, details}}.',
            },
        },
    )
    app.extensions["api"] = api
    register_internal_blueprints(api)
    register_admin_blueprints(api)
    register_error_handlers(app)
    return app
