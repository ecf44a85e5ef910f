"""A deliberately slow HTTP server on 127.0.0.1 that counts the connections it holds open."""

from __future__ import annotations

import http.server
import select
import threading
import time
from typing import ClassVar


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Answers after `delay_s`, or as soon as the client hangs up (so cancelled requests show)."""

    delay_s: ClassVar[float] = 8.0
    lock: ClassVar[threading.Lock]
    active: ClassVar[int]
    peak: ClassVar[int]
    total: ClassVar[int]

    def do_GET(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.active += 1
            cls.total += 1
            cls.peak = max(cls.peak, cls.active)
        try:
            deadline = time.monotonic() + cls.delay_s
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self.connection], [], [], 0.05)
                if readable and not self.connection.recv(1, 2):  # MSG_PEEK: b"" means hung up
                    return
            body = b"slow-answer"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass
        finally:
            with cls.lock:
                cls.active -= 1

    def log_message(self, *args: object) -> None:
        pass


class SlowServer:
    def __init__(self, delay_s: float = 8.0) -> None:
        self.handler = type(
            "Handler",
            (SlowHandler,),
            {"delay_s": delay_s, "lock": threading.Lock(), "active": 0, "peak": 0, "total": 0},
        )
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 256
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def active(self) -> int:
        return self.handler.active

    @property
    def peak(self) -> int:
        return self.handler.peak

    def wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.handler.active == 0:
                return True
            time.sleep(0.05)
        return self.handler.active == 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
