"""Run an ASGI app (the kiosk, or the controller's app with the kiosk mounted) under uvicorn
in a background thread, on loopback, on a free port, for the kiosk's tests; the controller
itself runs uvicorn inside its own event loop (cabinet/web.py).

The port is bound before uvicorn starts (a socket handed to `Server.run(sockets=...)`), so
`url` is known at once and two servers never race for a port; `start()` returns when uvicorn
says it has started, or raises after `timeout_s`.
"""
from __future__ import annotations

import socket
import threading

import uvicorn

from cabinet.kiosk.state import KioskError


class BackgroundServer:
    def __init__(self, app, *, host: str = "127.0.0.1", port: int = 0):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as e:
            self._sock.close()
            raise KioskError(f"cannot listen on {host}:{port}: {e.strerror}; pick another "
                             f"port") from e
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}",
                                        daemon=True)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as e:  # reported by start()
            self._failed = e
        finally:
            self._started.set()

    def start(self, timeout_s: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = threading.Event()
        # uvicorn sets `started` from its loop; look every 10 ms, at most timeout_s.
        for _ in range(int(timeout_s * 100)):
            if self._server.started or self._failed is not None or not self._thread.is_alive():
                break
            deadline.wait(0.01)
        if not self._server.started:
            self.stop()
            raise KioskError(f"uvicorn did not start on {self.url} within {timeout_s} s"
                             + (f": {self._failed}" if self._failed else ""))
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
