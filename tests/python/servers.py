"""Test-only peers: a listener that never reads, one that never accepts, a closed port. The
counting HTTP servers themselves live in demo/local_server.py (the demo uses them too)."""

import socket
import threading
import time

from local_server import LLMServer, Server

__all__ = ["APIServer", "Blackhole", "ForwardProxy", "FullBacklog", "LLMServer", "Server", "refused_port"]


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


class ForwardProxy(Server):
    """A forward HTTP proxy: a request in absolute form (`GET http://host:port/path`) is sent on
    to that origin and its answer relayed (with Content-Length); `CONNECT host:port` opens a
    tunnel to it (bytes relayed both ways until either side closes). With `auth=(user, password)`
    every request must carry `Proxy-Authorization: Basic ...` for them, else 407. Counted:
    `forwarded` requests, `tunnels` opened, `refused` (407s), `authorizations` seen; the inherited
    counters count the proxy's own connections and requests."""

    _HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te",
                   "trailer", "transfer-encoding", "upgrade"}

    def __init__(self, auth=None, **kw):
        self.forwarded = 0
        self.tunnels = 0
        self.refused = 0
        self.authorizations: list = []
        self._expected = None
        if auth is not None:
            import base64

            self._expected = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        super().__init__(**kw)

    def _authorized(self, conn, headers) -> bool:
        seen = headers.get("proxy-authorization")
        with self.lock:
            self.authorizations.append(seen)
        if self._expected is None or seen == self._expected:
            return True
        with self.lock:
            self.refused += 1
        conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n"
                     b"Content-Length: 0\r\n\r\n")
        return False

    def _respond(self, conn, method, target, headers, body):
        import http.client
        from urllib.parse import urlsplit

        if not self._authorized(conn, headers):
            return True
        if method == "CONNECT":
            return self._tunnel(conn, target)
        parts = urlsplit(target)
        if parts.scheme != "http":
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return True
        upstream = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            upstream.request(method, path or "/", body=body or None,
                             headers={k: v for k, v in headers.items() if k not in self._HOP_BY_HOP})
            answer = upstream.getresponse()
            payload = answer.read()
            status, reason, answer_headers = answer.status, answer.reason, answer.getheaders()
        finally:
            upstream.close()
        with self.lock:
            self.forwarded += 1
        head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(payload)}"]
        head += [f"{k}: {v}" for k, v in answer_headers
                 if k.lower() not in self._HOP_BY_HOP and k.lower() != "content-length"]
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        return True

    def _tunnel(self, conn, target) -> bool:
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except (OSError, ValueError):
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return False
        upstream.settimeout(None)
        # As real proxies do: without it, a client that writes a request in two pieces waits for
        # delayed ACKs (40 ms) on the relayed leg, which says nothing about the client.
        for s in (conn, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self.tunnels += 1
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        back = threading.Thread(target=pipe, args=(upstream, conn), daemon=True)
        back.start()
        pipe(conn, upstream)
        back.join()
        upstream.close()
        return False  # the connection was the tunnel: done


class APIServer(LLMServer):
    """LLMServer plus the rest of the OpenAI API that LiteLLM's entry points call, each answered
    with the smallest body the SDK parses: embeddings, moderations, files, batches, assistants,
    fine-tuning jobs, image generation, speech, responses; and Azure's deployment paths for chat
    completions. Every connection and request is counted, as in Server."""

    _LISTS = ("/v1/files", "/v1/batches", "/v1/assistants", "/v1/fine_tuning/jobs")

    def _respond(self, conn, method, target, headers, body):
        from urllib.parse import urlsplit

        path = urlsplit(target).path
        if path.startswith("/openai/deployments/") and path.endswith("/chat/completions"):
            return super()._respond(conn, method, "/v1/chat/completions", headers, body)
        if method == "GET" and path in self._LISTS:
            self._send_json(conn, {"object": "list", "data": [], "first_id": None, "last_id": None,
                                   "has_more": False})
        elif path == "/v1/embeddings":
            self._send_json(conn, {"object": "list", "model": "test-embedding",
                                   "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                                   "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        elif path == "/v1/moderations":
            self._send_json(conn, {"id": "modr-1", "model": "omni-moderation-latest",
                                   "results": [{"flagged": False, "categories": {}, "category_scores": {}}]})
        elif path == "/v1/images/generations":
            self._send_json(conn, {"created": 1, "data": [{"url": "http://127.0.0.1/image.png"}]})
        elif path == "/v1/audio/speech":
            audio = b"ID3" + bytes(61)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\n"
                         + f"Content-Length: {len(audio)}\r\n\r\n".encode() + audio)
        elif path == "/v1/responses":
            self._send_json(conn, {
                "id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-test",
                "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "text": "echo", "annotations": []}]}],
                "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2,
                          "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": 0}}})
        else:
            return super()._respond(conn, method, target, headers, body)
        return True


def wait_for(condition, timeout=5.0):
    """Polls `condition` until it is true; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
