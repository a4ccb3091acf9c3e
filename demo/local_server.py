"""The bundled local servers: HTTP/1.1 on 127.0.0.1 (over TLS when asked), written on raw sockets
so that every byte and every close is under control, and every connection, TLS handshake and
request is counted. `make demo` runs LiteLLM against LLMServer; the tests use both classes."""

from __future__ import annotations

import json
import random
import socket
import ssl
import struct
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


def throwaway_tls(directory: str | Path) -> tuple[ssl.SSLContext, str]:
    """A server context with a certificate for 127.0.0.1 from a new throw-away CA, and the path
    of that CA's PEM file (written into `directory`), for clients to trust as SSL_CERT_FILE.
    Needs `trustme` (a test dependency): ImportError without it."""
    import trustme

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.3 session tickets on: OpenSSL's default
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_path = str(Path(directory) / "ca.pem")
    ca.cert_pem.write_to_path(ca_path)
    return context, ca_path


class Server:
    """A keep-alive HTTP/1.1 server. Routes (query parameters in brackets):

    /json                 a small JSON body with Content-Length
    /echo                 the request's method, path, headers and body, as JSON
    /chunked[n]           n chunks of b"chunk-<i>\\n", chunked encoding
    /sse[n]               an OpenAI-style event stream: n events, then data: [DONE]
    /big[size]            size bytes with Content-Length
    /close                a response with Connection: close, then the socket closes
    /sleep[t]             answers after t seconds
    /slow-head[t]         sends the head after t seconds
    /slow-body[t]         sends the head and half the body, then waits t seconds
    /status[code]         an empty response with that status
    /reset                the head and half the body, then a TCP reset
    /cut-stream           an event stream that stops in the middle of an event (FIN, no last chunk)
    /half-close           a complete response, then the server stops writing (shutdown SHUT_WR)

    `close_idle_after`: seconds after which an idle keep-alive connection is closed.
    `close_every`: close the connection silently after that many responses (no header).
    With `tls` (see `throwaway_tls`), `tls_handshakes_full` and `tls_handshakes_resumed` count
    the handshakes that completed, by whether the client resumed an earlier session.
    """

    def __init__(self, tls: ssl.SSLContext | None = None, close_idle_after: float | None = None,
                 close_every: int | None = None, port: int = 0):
        self.tls = tls
        self.close_idle_after = close_idle_after
        self.close_every = close_every
        self.lock = threading.Lock()
        self.connections = 0
        self.open_connections = 0
        self.max_open_connections = 0
        self.requests = 0
        self.tls_handshakes_full = 0
        self.tls_handshakes_resumed = 0
        self.errors: list[str] = []
        self._sock = socket.socket()
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind(("127.0.0.1", port))
            self._sock.listen(1024)
        except OSError:
            self._sock.close()
            raise
        self.port = self._sock.getsockname()[1]
        self._stopping = False
        self._conns: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stops listening and closes every connection (clients see them close)."""
        self._stopping = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
        except OSError:
            pass
        self._sock.close()
        with self.lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            # Like production servers: without it, small writes wait for delayed ACKs (40 ms)
            # on reused connections, a stall no real LLM API has.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            self._conns.add(conn)
            self.connections += 1
            self.open_connections += 1
            self.max_open_connections = max(self.max_open_connections, self.open_connections)
        try:
            if self.tls:
                tls_conn = self.tls.wrap_socket(conn, server_side=True)  # the handshake happens here
                with self.lock:
                    self._conns.discard(conn)  # detached by wrap_socket: close() reaches tls_conn
                    self._conns.add(tls_conn)
                    conn = tls_conn
                    if conn.session_reused:
                        self.tls_handshakes_resumed += 1
                    else:
                        self.tls_handshakes_full += 1
            self._serve_requests(conn)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            with self.lock:
                self._conns.discard(conn)
                self.open_connections -= 1
            try:
                conn.close()
            except OSError:
                pass

    def _serve_requests(self, conn: socket.socket) -> None:
        buffer = b""
        served = 0
        while True:
            conn.settimeout(self.close_idle_after)
            while b"\r\n\r\n" not in buffer:
                try:
                    data = conn.recv(65536)
                except (socket.timeout, TimeoutError):
                    return  # idle too long: close
                if not data:
                    return
                buffer += data
            conn.settimeout(None)
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0"))
            while len(buffer) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            body, buffer = buffer[:length], buffer[length:]
            with self.lock:
                self.requests += 1
            keep_open = self._respond(conn, method, target, headers, body)
            served += 1
            if not keep_open or (self.close_every and served % self.close_every == 0):
                return

    def _respond(self, conn, method, target, headers, body) -> bool:
        parts = urlsplit(target)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path

        def send(status, payload=b"", extra=(), reason="OK"):
            head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(payload)}", *extra]
            conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

        def send_chunked(chunks, content_type="text/plain"):
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            for c in chunks:
                conn.sendall(f"{len(c):x}\r\n".encode() + c + b"\r\n")
            conn.sendall(b"0\r\n\r\n")

        if path == "/json":
            send(200, b'{"object": "chat.completion", "ok": true}', ["Content-Type: application/json"])
        elif path == "/echo":
            payload = json.dumps({"method": method, "target": target, "headers": headers,
                                  "body": body.decode("latin-1")}).encode()
            send(200, payload, ["Content-Type: application/json"])
        elif path == "/chunked":
            send_chunked([f"chunk-{i}\n".encode() for i in range(int(q.get("n", 5)))])
        elif path == "/sse":
            events = [f'data: {{"i": {i}}}\n\n'.encode() for i in range(int(q.get("n", 5)))]
            send_chunked(events + [b"data: [DONE]\n\n"], "text/event-stream")
        elif path == "/big":
            send(200, b"x" * int(q.get("size", 1_000_000)))
        elif path == "/close":
            send(200, b"bye", ["Connection: close"])
            return False
        elif path == "/sleep":
            time.sleep(float(q.get("t", 0.1)))
            send(200, b"slept")
        elif path == "/slow-head":
            time.sleep(float(q.get("t", 1)))
            send(200, b"late")
        elif path == "/slow-body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
            time.sleep(float(q.get("t", 1)))
            conn.sendall(b"world")
        elif path == "/status":
            code = int(q.get("code", 200))
            send(code, b"", reason="Status")
        elif path == "/reset":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        elif path == "/cut-stream":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            event = b'data: {"i": 0}\n\ndata: {"i": 1'
            conn.sendall(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            return False
        elif path == "/half-close":
            send(200, b"half")
            conn.shutdown(socket.SHUT_WR)
        else:
            send(404, b"not found", reason="Not Found")
        return True


def _sse(events):
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events]


class LLMServer(Server):
    """An OpenAI-compatible (/v1/chat/completions) and Anthropic-compatible (/v1/messages)
    server: JSON answers, or chunked server-sent events when the request asks to stream. The
    reply echoes the last user message, so each response can be checked.

    Faults, off by default (attributes, so they can be changed while it serves):
    `rate_limit`: the share of model requests answered 429 with an OpenAI-style error body
    (the connection stays open); `cut_streams`: the share of the other streaming requests whose
    event stream stops in the middle of an event (FIN, no last chunk). Drawn from a random
    generator seeded with `seed`; `rate_limited` and `streams_cut` count what was done."""

    def __init__(self, *args, rate_limit: float = 0.0, cut_streams: float = 0.0, seed: int = 0, **kwargs):
        self.rate_limit = rate_limit
        self.cut_streams = cut_streams
        self.rate_limited = 0
        self.streams_cut = 0
        self._random = random.Random(seed)
        super().__init__(*args, **kwargs)

    def _fault(self, stream: bool) -> str | None:
        if not (self.rate_limit or self.cut_streams):
            return None
        with self.lock:
            if self._random.random() < self.rate_limit:
                self.rate_limited += 1
                return "429"
            if stream and self._random.random() < self.cut_streams:
                self.streams_cut += 1
                return "cut"
        return None

    def _respond(self, conn, method, target, headers, body):
        path = urlsplit(target).path
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/messages"):
            return super()._respond(conn, method, target, headers, body)
        request = json.loads(body)
        fault = self._fault(bool(request.get("stream")))
        if fault == "429":
            data = json.dumps({"error": {"message": "Rate limit reached (local test server)", "type": "rate_limit_error",
                                         "param": None, "code": "rate_limit_exceeded"}}).encode()
            conn.sendall(f"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            return True
        if fault == "cut":
            event = _sse([{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": request["model"],
                           "choices": [{"index": 0, "delta": {"role": "assistant", "content": "echo: "},
                                        "finish_reason": None}]}])[0] + b'data: {"id": "c1", "obj'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + f"{len(event):x}\r\n".encode() + event + b"\r\n")
            return False  # closes the connection: FIN in the middle of the body
        prompt = request["messages"][-1]["content"]
        if isinstance(prompt, list):
            prompt = "".join(part.get("text", "") for part in prompt)
        reply = f"echo: {prompt}"
        words = reply.split(" ")
        if path == "/v1/chat/completions":
            if request.get("stream"):
                chunks = [{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": request["model"],
                           "choices": [{"index": 0, "delta": {"role": "assistant", "content": w + (" " if i < len(words) - 1 else "")},
                                        "finish_reason": None}]} for i, w in enumerate(words)]
                chunks.append({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": request["model"],
                               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self._send_stream(conn, _sse(chunks) + [b"data: [DONE]\n\n"])
            else:
                self._send_json(conn, {
                    "id": "c1", "object": "chat.completion", "created": 1, "model": request["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)},
                })
        else:
            message = {"id": "msg_1", "type": "message", "role": "assistant", "model": request["model"],
                       "content": [], "stop_reason": None, "stop_sequence": None,
                       "usage": {"input_tokens": 3, "output_tokens": 0}}
            if request.get("stream"):
                events = [("message_start", {"type": "message_start", "message": message}),
                          ("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": {"type": "text", "text": ""}})]
                events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta", "text": w + (" " if i < len(words) - 1 else "")}})
                           for i, w in enumerate(words)]
                events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                           ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                              "usage": {"output_tokens": len(words)}}),
                           ("message_stop", {"type": "message_stop"})]
                self._send_stream(conn, [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events])
            else:
                message.update(content=[{"type": "text", "text": reply}], stop_reason="end_turn",
                               usage={"input_tokens": 3, "output_tokens": len(words)})
                self._send_json(conn, message)
        return True

    @staticmethod
    def _send_json(conn, payload):
        data = json.dumps(payload).encode()
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)

    @staticmethod
    def _send_stream(conn, chunks):
        out = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"]
        out += [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks]
        out.append(b"0\r\n\r\n")
        for part in out:
            conn.sendall(part)


def main() -> None:
    """`python demo/local_server.py [--port 8000]`: the OpenAI- and Anthropic-compatible server
    on its own, for trying LiteLLM (or anything else) against it; Ctrl-C stops it."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (default 8000)")
    args = parser.parse_args()
    server = LLMServer(port=args.port)
    print(f"serving on {server.url}  (OpenAI: api_base={server.url}/v1, any api_key; Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        print(f"served {server.requests} requests on {server.connections} connections")


if __name__ == "__main__":
    main()
