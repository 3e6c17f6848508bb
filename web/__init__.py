"""HTTP layer: the Flask + flask-smorest API. Build the app with :func:`web.app.create_app`."""
