"""Test-only peers: a listener that never reads, one that never accepts, a closed port. The
counting HTTP servers themselves live in demo/local_server.py (the demo uses them too)."""

import socket
import threading
import time

from local_server import LLMServer, Server

__all__ = ["Blackhole", "FullBacklog", "LLMServer", "Server", "refused_port"]


class Blackhole:
    """A listener that accepts connections and never reads from them (writes stall)."""

    def __init__(self):
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.held.append(conn)

    def close(self):
        self._stopping = True
        self._sock.close()
        for c in self.held:
            c.close()


class FullBacklog:
    """A listener that never accepts, with its accept queue filled: new connects hang."""

    def __init__(self):
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(0)
        self.port = self._sock.getsockname()[1]
        self._fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self._fillers.append(s)
        time.sleep(0.05)

    def close(self):
        for s in self._fillers:
            s.close()
        self._sock.close()


def refused_port() -> int:
    """A port with nothing listening on it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
