"""The head of an HTTP/1.x request (request line and header fields), parsed without the ``email`` package.

The stdlib's ``BaseHTTPRequestHandler.parse_request`` hands the header block to ``email.parser``, about 30 µs
of a ~170 µs request on its own (measured with a seven-header GET), and every client of the simulated cluster
pays it on every call. Header fields are simple lines (RFC 9112 §5), so they are read here directly into the
same ``http.client.HTTPMessage`` the handler exposes as ``self.headers``, with the stdlib's limits (line
length, header count). A line that is not a field is refused with 400, as the real API server (Go's
net/http) does, where the stdlib would have let it end the headers silently.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from http import HTTPStatus
from typing import BinaryIO

MAX_LINE = 65536  # http.client's own limits
MAX_HEADERS = 100
_END_OF_HEADERS = (b"\r\n", b"\n", b"")


class HeadError(Exception):
    """A request head the server answers with ``status`` (and closes the connection after)."""

    def __init__(self, status: HTTPStatus, message: str, explain: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.explain = explain


@dataclass(frozen=True)
class RequestLine:
    command: str
    path: str
    version: str  # "HTTP/0.9" for a two-word (HTTP/0.9) request line
    keep_alive: bool  # HTTP/1.1 or later keeps the connection open unless the headers say otherwise


def parse_request_line(line: str, default_version: str) -> RequestLine | None:
    """``METHOD PATH HTTP/x.y`` (or HTTP/0.9's ``GET PATH``); None for an empty line, which gets no answer."""
    words = line.split()
    if not words:
        return None
    version, keep_alive = default_version, False
    if len(words) >= 3:
        version = words[-1]
        number = _version_number(version)
        if number is None:
            raise HeadError(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
        if number >= (2, 0):
            raise HeadError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({version[5:]})")
        keep_alive = number >= (1, 1)
    if not 2 <= len(words) <= 3:
        raise HeadError(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({line!r})")
    command, path = words[:2]
    if len(words) == 2 and command != "GET":
        raise HeadError(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
    if path.startswith("//"):  # a client would read //host/path as another host (the stdlib does the same)
        path = "/" + path.lstrip("/")
    return RequestLine(command, path, version, keep_alive)


def _version_number(version: str) -> tuple[int, int] | None:
    if not version.startswith("HTTP/"):
        return None
    parts = version[5:].split(".")
    if len(parts) != 2 or not all(part.isascii() and part.isdigit() and len(part) <= 10 for part in parts):
        return None
    return int(parts[0]), int(parts[1])


def read_headers(stream: BinaryIO) -> http.client.HTTPMessage:
    """The header fields up to the blank line that ends them, in order; repeated names are all kept."""
    fields: list[list[str]] = []
    while True:
        line = stream.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", "header line")
        if line in _END_OF_HEADERS:
            break
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):
            # An obsolete folded continuation of the previous field (RFC 9112 §5.2): joined with a space.
            if not fields:
                raise HeadError(HTTPStatus.BAD_REQUEST, "Bad request: malformed MIME header initial line")
            fields[-1][1] += " " + text.strip(" \t")
            continue
        name, colon, value = text.partition(":")
        if not colon or not name or name != name.strip(" \t"):
            raise HeadError(HTTPStatus.BAD_REQUEST, f"Bad request: malformed MIME header line: {text[:100]}")
        if len(fields) == MAX_HEADERS:
            raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers",
                            f"got more than {MAX_HEADERS} headers")
        fields.append([name, value.strip(" \t")])
    message = http.client.HTTPMessage()
    for name, value in fields:
        message[name] = value
    return message
