"""Live updates on a real `sami serve`: event streams do not hold web threads, and a change in the
database reaches every open stream."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
from sqlalchemy.orm import sessionmaker

from bot.core import db
from bot.core.models import Deployment
from bot.services.tokens import Scopes, create_token, revoke_token
from tests.support.sami_server import SamiServer, sami_env

STREAMS = 24  # three times the threads of the server below


def open_stream(port: int, cookie: str | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    headers = f"Cookie: {cookie}\r\n" if cookie else ""
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{headers}\r\n".encode())
    return sock


def read_until(sock: socket.socket, marker: bytes, seen: bytes = b"", timeout: float = 15) -> bytes:
    deadline = time.monotonic() + timeout
    while marker not in seen:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"stream closed before {marker!r}: {seen[-500:]!r}")
        seen += chunk
    return seen


def read_event(sock: socket.socket, name: str, seen: bytes) -> bytes:
    """``seen`` and what came after it, up to the end of the first ``name`` event."""
    seen = read_until(sock, f"event: {name}".encode(), seen)
    while b"\n\n" not in seen.split(f"event: {name}".encode(), 1)[1]:
        seen = read_until(sock, b"\n", seen + sock.recv(65536))
    return seen


def events_in(raw: bytes) -> list[tuple[str, dict]]:
    found = []
    for block in raw.split(b"\r\n\r\n", 1)[-1].split(b"\n\n"):
        lines = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


@pytest.fixture
def server(own_database_url, tmp_path):
    env = sami_env(SAMI_DATABASE_URL=own_database_url, SAMI_INSTANCE_DIR=str(tmp_path / "instance"),
                   SAMI_MODE="development", SAMI_WEBHOOK_SECRET="w" * 20, SAMI_SECRET_KEY="k" * 32)
    with SamiServer(env, tmp_path / "serve.log", "--threads", "8") as running:
        yield running


def test_streams_do_not_hold_threads_and_all_see_a_change(server, own_database_url):
    streams = [open_stream(server.port) for _ in range(STREAMS)]
    try:
        seen = [read_until(s, b"event: hello") for s in streams]
        assert all(b"HTTP/1.1 200" in raw and b"text/event-stream" in raw for raw in seen)
        assert all(b"Transfer-Encoding: chunked" not in raw for raw in seen)
        # 24 open streams, 8 threads: the page itself still answers
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        connection.close()
        time.sleep(1.5)  # the poller has taken note of the table as it was
        engine = db.make_engine(own_database_url)
        with sessionmaker(bind=engine)() as session:
            session.add(Deployment(name="live-stage", service="live", environment="stage", type="static_file",
                                   state="CreatePending"))
            session.commit()
        engine.dispose()
        for i, sock in enumerate(streams):
            seen[i] = read_event(sock, "change", seen[i])
            changes = [data for event, data in events_in(seen[i]) if event == "change"]
            assert changes and changes[0]["deployments"][0]["name"] == "live-stage"
            assert changes[0]["deployments"][0]["state"] == "CreatePending"
            assert changes[0]["deployments"][0]["tone"] == "busy" and changes[0]["deployments"][0]["reason"] is None
    finally:
        for sock in streams:
            sock.close()


def sign_in_with_token(port: int, token: str) -> str:
    """Sign in on the page's form with a Sami token; the session cookie."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/login")
    response = connection.getresponse()
    cookie = response.getheader("Set-Cookie").split(";", 1)[0]
    csrf = response.read().decode().split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    connection.request("POST", "/login/token", body=f"token={token}&csrf_token={csrf}",
                       headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    response = connection.getresponse()
    assert response.status == 302
    cookie = response.getheader("Set-Cookie").split(";", 1)[0]
    response.read()
    connection.close()
    return cookie


def test_a_scoped_viewer_gets_only_its_changes(server, own_database_url):
    engine = db.make_engine(own_database_url)
    factory = sessionmaker(bind=engine)
    with factory() as session:
        token = create_token(session, "web-reader", Scopes(services=("web",), actions=("read",)))
        session.commit()
    cookie = sign_in_with_token(server.port, token)
    scoped, everything = open_stream(server.port, cookie), open_stream(server.port)
    try:
        seen_scoped, seen_all = read_until(scoped, b"event: hello"), read_until(everything, b"event: hello")
        time.sleep(1.5)
        with factory() as session:
            session.add(Deployment(name="api-stage", service="api", environment="stage", type="k8s",
                                   state="CreatePending"))
            session.commit()
            seen_all = read_until(everything, b"api-stage", seen_all)
            session.add(Deployment(name="web-stage", service="web", environment="stage", type="swarm",
                                   state="CreatePending"))
            session.commit()
        seen_scoped = read_until(scoped, b"web-stage", seen_scoped)
        assert b"api-stage" not in seen_scoped
    finally:
        scoped.close()
        everything.close()
        engine.dispose()


def test_revoking_the_token_closes_its_open_streams(server, own_database_url):
    # The page signs a revoked token out at its next request; an open stream must not go on
    # telling that viewer about every change (in SAMI_PAGE_READ=login mode, nobody else may read them).
    engine = db.make_engine(own_database_url)
    factory = sessionmaker(bind=engine)
    with factory() as session:
        token = create_token(session, "soon-revoked", Scopes(services=("web",), actions=("read",)))
        session.commit()
    cookie = sign_in_with_token(server.port, token)
    revoked, anonymous = open_stream(server.port, cookie), open_stream(server.port)
    try:
        read_until(revoked, b"event: hello")
        seen_anonymous = read_until(anonymous, b"event: hello")
        with factory() as session:
            revoke_token(session, "soon-revoked")
            session.commit()
        revoked.settimeout(10)
        rest = b""
        while chunk := revoked.recv(65536):  # the server closes it: recv answers b"" (a timeout fails the test)
            rest += chunk
        assert b"event: change" not in rest
        time.sleep(1.5)
        with factory() as session:
            session.add(Deployment(name="web-stage", service="web", environment="stage", type="swarm",
                                   state="CreatePending"))
            session.commit()
        assert b"web-stage" in read_until(anonymous, b"web-stage", seen_anonymous)  # other streams go on
    finally:
        revoked.close()
        anonymous.close()
        engine.dispose()
