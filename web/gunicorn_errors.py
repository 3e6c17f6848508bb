"""gunicorn's answers to requests it cannot parse, in the API's JSON error shape (see ``web.errors``).

A request line, header or chunk gunicorn refuses never reaches Flask: gunicorn answers it itself, with an
HTML page, through ``gunicorn.util.write_error(sock, status, reason, message)``. Clients branch on
``error.code`` of a JSON body, so ``web.gunicorn_config`` installs :func:`write_json_error` in its place
(gunicorn's workers call it by module attribute, and keep their own choice of status and message).
Kept free of Flask imports: it is loaded with gunicorn's configuration, before the app.
"""

from __future__ import annotations

import json
import socket

from gunicorn.util import write_nonblock

# Codes by the statuses gunicorn's Worker.handle_error answers with.
_CODES_BY_STATUS = {
    400: "bad_request",
    403: "forbidden",
    414: "request_line_too_long",
    417: "expectation_failed",
    431: "request_header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def write_json_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    code = _CODES_BY_STATUS.get(status, "bad_request" if status < 500 else "internal_error")
    body = json.dumps({"error": {"code": code, "message": message or reason, "details": {}}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    write_nonblock(sock, head.encode("latin-1") + body)
