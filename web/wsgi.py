"""gunicorn entry point: ``gunicorn 'web.wsgi:app'``. The only module that builds an app at import."""

from settings import get_settings
from web.app import create_app
from workers.logs import configure_logging

configure_logging("web", get_settings().log_level)
app = create_app()
