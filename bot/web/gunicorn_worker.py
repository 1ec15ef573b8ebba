"""The gunicorn worker `sami serve` runs: gunicorn's threaded worker, except that the errors
gunicorn answers itself, before the application sees the request (request line too long, header
fields too large, a malformed request), are JSON like every other API error instead of HTML, and
on SIGTERM new connections are refused at once while in-flight requests finish."""

from __future__ import annotations

import json
import re

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

STATUS_LINE = re.compile(rb"^HTTP/1\.[01] ([0-9]{3}) ([^\r\n]*)")


class _AnswerRecorder:
    """Stands in for the client socket while gunicorn writes its HTML error, to learn which
    status it chose (gunicorn also logs the error and the access line meanwhile)."""

    def __init__(self) -> None:
        self.written = b""

    def gettimeout(self) -> float:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.written += data


class JSONErrorWorker(ThreadWorker):
    """gunicorn's ``gthread`` worker with JSON error answers and a prompt close of its listeners."""

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            # Stopping: close this process's copies of the listening sockets now, not once the
            # in-flight requests are done, so that new connections are refused (a client or a load
            # balancer tries elsewhere) instead of waiting in the backlog until they are reset.
            for listener in self.sockets:
                listener.close()

    def handle_error(self, req, client, addr, exc) -> None:
        recorder = _AnswerRecorder()
        super().handle_error(req, recorder, addr, exc)
        match = STATUS_LINE.match(recorder.written)
        status, reason = (int(match[1]), match[2].decode("latin-1")) if match else (500, "Internal Server Error")
        body = json.dumps({"error": self.error_message(status, reason, exc), "status": status}).encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        try:
            util.write_nonblock(client, head + body)
        except Exception:  # the client is gone; gunicorn gives up the same way
            self.log.debug("Failed to send error message.")

    def error_message(self, status: int, reason: str, exc: BaseException) -> str:
        """What went wrong, in the words of the API's other errors, naming the limit that was hit."""
        if status == 414:
            return (f"request line too long: the method, path and query string may take at most "
                    f"{self.cfg.limit_request_line} bytes")
        if status == 431:
            return (f"request header fields too large: at most {self.cfg.limit_request_fields} fields of at most "
                    f"{self.cfg.limit_request_field_size} bytes each")
        if status >= 500:
            return "internal error; the server log has the details"
        detail = str(exc)
        return f"{reason.lower()}: {detail}" if detail else reason.lower()
