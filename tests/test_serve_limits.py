"""`sami serve` at its limits, over raw HTTP: a chunked body past the size limit is a 413, and the
errors gunicorn answers itself (request line too long, header fields too large, a malformed
request) are JSON like every other API error."""

from __future__ import annotations

import json
import select
import socket

import pytest

from tests.support.sami_server import SamiServer, sami, sami_env
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

LIMIT = 1024 * 1024  # SAMI_MAX_REQUEST_BYTES's default


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A `sami serve` of the embedded default and an admin token for it; stopped however the tests end."""
    tmp_path = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = sami_env(SAMI_INSTANCE_DIR=str(tmp_path / "instance"), SAMI_BASE_DOMAIN=f"127.0.0.1:{port}",
                   SAMI_PUBLIC_URL=f"http://127.0.0.1:{port}")
    sami("db", "upgrade", env=env)
    token = sami("token", "create", "limits", "--admin", env=env).stdout.strip()
    with SamiServer(env, tmp_path / "serve.log", port=port):
        yield port, token


def parse_answer(answer: bytes) -> tuple[int, dict]:
    """Status and JSON body of one HTTP/1.1 answer, checking that it is JSON of the length it says."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers.get("Content-Type") == "application/json", answer[:400]
    assert int(headers["Content-Length"]) == len(body), answer[:400]
    return int(lines[0].split()[1]), json.loads(body)


def read_answer(sock: socket.socket) -> bytes:
    answer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if length is not None and len(body) >= length:
            break
    return answer


def raw(port, data: bytes) -> tuple[int, dict]:
    """Send bytes gunicorn will refuse before the application sees them; parse its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        return parse_answer(read_answer(sock))


def post_chunked(port, token, total: int) -> tuple[int, dict]:
    """POST a JSON body of about ``total`` bytes in chunks, reading the answer as soon as there is one.

    Like curl, and unlike http.client, this stops sending when the server answers early: a server
    that refuses a body does not read the rest of it, and closes the connection after a short drain.
    """
    head = (f"POST /deployment_request HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for chunk in [*chunks(total), b""]:
            if select.select([sock], [], [], 0)[0]:
                break  # answered early
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
        return parse_answer(read_answer(sock))


def chunks(total: int, size: int = 64 * 1024):
    yield b'{"service": "docs", "environment": "stage", "tag": "v1", "padding": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


def test_a_chunked_body_past_the_limit_is_a_413(server):
    port, token = server
    status, body = post_chunked(port, token, 5 * LIMIT)
    assert status == 413, body
    assert body == {"error": f"request body too large: at most {LIMIT} bytes", "status": 413}


def test_a_chunked_body_within_the_limit_is_read(server):
    port, token = server
    status, body = post_chunked(port, token, LIMIT // 2)
    assert (status, body["error"]) == (400, "unknown field(s) padding (known: environment, force, image, overrides, "
                                            "pull_request, ref, repository, service, sha, tag, unpin)")


def test_a_request_line_too_long_is_a_json_414(server):
    port, _ = server
    status, body = raw(port, b"GET /api/v1/deployments?q=" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414
    assert body["status"] == 414
    assert body["error"].startswith("request line too long: the method, path and query string may take at most")


@pytest.mark.parametrize("headers", [
    b"X-Large: " + b"a" * 10_000 + b"\r\n",
    b"".join(b"X-Many-%d: 1\r\n" % n for n in range(200)),
])
def test_header_fields_too_large_are_a_json_431(server, headers):
    port, _ = server
    status, body = raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status == 431
    assert body["status"] == 431
    assert body["error"].startswith("request header fields too large: at most")


def test_a_malformed_request_is_a_json_400(server):
    port, _ = server
    status, body = raw(port, b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n")
    assert status == 400
    assert body["error"].startswith("bad request: Invalid HTTP Version")


@pytest.mark.parametrize("path", ["/webhooks/github", "/deployment_request"])
@pytest.mark.parametrize("framing", [b"zz\r\n", b"5\r\nabcdeXX", b"-1\r\n"])
def test_a_body_in_broken_chunked_framing_is_a_json_400(server, path, framing):
    port, token = server
    status, body = raw(port, (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                              "X-Hub-Signature-256: sha256=00\r\nContent-Type: application/json\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n").encode() + framing)
    assert status == 400, body
    assert body["error"].startswith("the request body could not be read (")
    assert body["error"].endswith("): send it with a Content-Length, or in valid chunked framing")
