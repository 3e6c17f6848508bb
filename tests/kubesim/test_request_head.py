"""kubesim's own request-head parsing (kubesim/request_head.py): the answers and connection rules of the stdlib's,
over a raw socket, and a clear 400 for what the real API server refuses."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator

import pytest

from kubesim.request_head import MAX_HEADERS, HeadError, parse_request_line, read_headers
from tests.kubesim.test_api_support import Running, running_server


@pytest.fixture
def server() -> Iterator[Running]:
    with running_server() as running:
        yield running


def exchange(server: Running, *requests: bytes, read_until_closed: bool = False) -> bytes:
    """Send ``requests`` on one connection and return everything the server answered."""
    host, port = server.server.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(b"".join(requests))
        if not read_until_closed:
            connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        return received


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a stream of HTTP/1.1 responses (each with Content-Length) into (status, headers, body)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("iso-8859-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        found.append((int(lines[0].split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return found


def get(path: str, *fields: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: kubesim", *fields]) + "\r\n\r\n").encode()


def test_keep_alive_serves_several_requests_and_connection_close_ends_them(server: Running) -> None:
    raw = exchange(server, get("/api/v1/namespaces/default"), get("/api/v1/namespaces/team-a", "Connection: close"),
                   get("/api/v1/namespaces/kube-system"), read_until_closed=True)
    served = answers(raw)
    assert [status for status, _, _ in served] == [200, 200]
    assert [json.loads(body)["metadata"]["name"] for _, _, body in served] == ["default", "team-a"]


def test_header_names_are_case_insensitive_and_folded_lines_join(server: Running) -> None:
    body = json.dumps({"metadata": {"name": "folded"}}).encode()
    request = (b"POST /api/v1/namespaces HTTP/1.1\r\nhost: kubesim\r\ncontent-TYPE: application/json\r\n"
               b"CONTENT-LENGTH: " + str(len(body)).encode() + b"\r\nX-Note: first\r\n\t second\r\n"
               b"Connection: close\r\n\r\n" + body)
    [(status, _, answer)] = answers(exchange(server, request))
    assert status == 201, answer
    assert json.loads(answer)["metadata"]["name"] == "folded"


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", "12 34", "\u00b2"])
def test_a_content_length_that_is_not_a_number_is_a_400_status(server: Running, length: str) -> None:
    request = f"POST /api/v1/namespaces HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    [(status, headers, body)] = answers(exchange(server, request.encode("latin-1"), read_until_closed=True))
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["reason"] == "BadRequest"
    assert "Content-Length" in json.loads(body)["message"]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /api HTTP/1.1\r\nHost kubesim\r\n\r\n", 400),  # a field without a colon
        (b"GET /api HTTP/1.1\r\n continued\r\n\r\n", 400),  # a continuation with nothing to continue
        (b"GET /api HTTP/1.1\r\nHost : kubesim\r\n\r\n", 400),  # whitespace before the colon
        (b"GET /api HTTP/2.0\r\n\r\n", 505),
        ("GET /api HTTP/1.\u00b2\r\n\r\n".encode("latin-1"), 400),  # a superscript two: isdigit(), not int()
        (b"GET /api HTTP/one\r\n\r\n", 400),
        (b"GET /api extra HTTP/1.1\r\n\r\n", 400),
        (b"POST /api\r\n\r\n", 400),  # HTTP/0.9 knows only GET
        (b"GET /api HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n", 431),
        (b"GET /api HTTP/1.1\r\nX-Long: " + b"y" * 70000 + b"\r\n\r\n", 431),
    ],
)
def test_a_malformed_head_gets_an_error_answer_and_the_connection_closes(server: Running, request_bytes: bytes,
                                                                         status: int) -> None:
    # The request after it is never served: the connection closes after the error.
    raw = exchange(server, request_bytes, get("/api/v1/namespaces/default"), read_until_closed=True)
    [(answered, headers, body)] = answers(raw)
    assert answered == status
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body.decode().startswith(f"{status} ")


def test_http_1_0_closes_after_one_answer_unless_asked_to_keep_alive(server: Running) -> None:
    one_zero = b"GET /api/v1/namespaces/default HTTP/1.0\r\n\r\n"
    assert len(answers(exchange(server, one_zero, one_zero, read_until_closed=True))) == 1
    kept = b"GET /api/v1/namespaces/default HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    assert len(answers(exchange(server, kept, one_zero, read_until_closed=True))) == 2


def test_expect_100_continue_is_answered_before_the_body(server: Running) -> None:
    body = json.dumps({"metadata": {"name": "expected"}}).encode()
    head = (b"POST /api/v1/namespaces HTTP/1.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    host, port = server.server.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(head)
        interim = connection.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        connection.sendall(body)
        final = b""
        while chunk := connection.recv(65536):
            final += chunk
    assert final.startswith(b"HTTP/1.1 201 ")
    assert server.store.try_get("namespaces", "", "expected") is not None


def test_double_slashes_lead_to_the_same_path() -> None:
    line = parse_request_line("GET //api/v1/namespaces HTTP/1.1", "HTTP/0.9")
    assert line is not None
    assert line.path == "/api/v1/namespaces"
    assert line.keep_alive


def test_read_headers_keeps_repeated_fields_in_order() -> None:
    headers = read_headers(io.BytesIO(b"Accept: a\r\nX-Many: 1\r\nx-many: 2\r\n\r\nbody"))
    assert headers.get_all("X-Many") == ["1", "2"]
    assert headers["accept"] == "a"


def test_read_headers_stops_at_the_end_of_the_stream() -> None:
    assert list(read_headers(io.BytesIO(b"A: 1\r\n")).items()) == [("A", "1")]
    with pytest.raises(HeadError):
        read_headers(io.BytesIO(b"no colon here\r\n\r\n"))
