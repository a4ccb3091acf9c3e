"""An HTTP/2 server for tests (asyncio + the `h2` library), with a minimal HTTP/1.1 fallback.

It listens on 127.0.0.1 (ephemeral port) and runs its own event loop in a background thread, so
sync tests can use it as well as async ones::

    with H2Server(tls=True) as server:              # or server.start() ... server.stop()
        httpx.get(server.url + "/json", verify=server.client_context())

Options
  tls                     True: TLS (certificate from a trustme CA, `ca_path` / `client_context()`)
                          with ALPN; False: cleartext. Cleartext connections that open with the
                          HTTP/2 preface speak HTTP/2 (prior knowledge); any other first bytes are
                          served as HTTP/1.1 (unless http1=False: then the connection is closed).
  alpn                    the protocols offered by ALPN (TLS): ("h2", "http/1.1") by default, or
                          ("http/1.1",) to test the fallback. A TLS connection that does not
                          select "h2" is served as HTTP/1.1.
  max_concurrent_streams  SETTINGS_MAX_CONCURRENT_STREAMS advertised (default 100).

Paths (any method; the body of a request is read whole before the handler runs)
  /json                   200 JSON echo: method, path, body_length, headers (list of [name, value]
                          as received, pseudo-headers included), connection, stream_id, protocol.
                          Any path not listed here answers the same echo, so any POST echoes its
                          body length.
  /sse?events=N&delay=S   text/event-stream: N events `data: {"i": <i>}` S seconds apart, then
                          `data: [DONE]` (S seconds after the last one).
  /slow?delay=S           waits S seconds, then the JSON echo.
  /hang                   sends the response head, never a body (until the stream or connection
                          is gone).
  /big?size=N             N bytes, bytes(i % 251), with Content-Length, sent as the client's flow
                          control windows allow.
  /status?code=N          status N, JSON echo body.
  POST /v1/chat/completions   OpenAI's chat completions API: the reply is "echo: " + the last
                          message's text; JSON, or with "stream": true chunk events (`data: {...}`)
                          ending with `data: [DONE]`. (Another method: the JSON echo.)
  POST /v1/messages       Anthropic's messages API, the same reply; with "stream": true its event
                          sequence (message_start, content_block_start, content_block_delta per
                          word, content_block_stop, message_delta, message_stop).
                          Both endpoints wait `llm_delay` seconds (default 0) before answering, and
                          their streams pause `llm_stream_pause` seconds (default 0) before the
                          last event (`data: [DONE]` / message_stop), the stream still open.

Each HTTP/2 stream is served in its own task; DATA is sent within the peer's flow-control windows
(h2's local_flow_control_window, waiting for WindowUpdated). HTTP/1.1 is served one request at a
time per connection (keep-alive, Content-Length request bodies only; chunked responses when the
length is not known).

What is counted (thread-safe, read from any thread; see the properties and snapshot methods):
connections accepted, TLS handshakes, per-connection info (protocol, streams opened, streams
processed, most streams open at once), the requests processed in order (each with its protocol,
"h2" or "http/1.1": requests(), protocols()), the most streams open at once on one connection and
over all of them, streams reset by the client (with error code), PINGs received, streams refused,
streams over the advertised limit.

Controls (callable from any thread): goaway(), goaway_on_next_stream(n), refuse_next(n),
ignore_pings = True, close_all().
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
import json
import os
import socket
import ssl
import struct
import tempfile
import threading
import time
from urllib.parse import parse_qsl, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import trustme
from hyperframe.frame import GoAwayFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PATTERN = bytes(range(251))
UNLIMITED = 2**31 - 1


def pattern(size: int) -> bytes:
    """The body /big?size=N sends: bytes(i % 251 for i in range(N))."""
    return (PATTERN * (size // 251 + 1))[:size]


# --- the LLM APIs' answers (what LiteLLM 1.110's OpenAI SDK and Anthropic parsers read) ---------

LLM_PATHS = ("/v1/chat/completions", "/v1/messages")


def _words(reply: str) -> list[str]:
    """The reply in stream pieces, each word with the space after it: joined, they are the reply."""
    words = reply.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def openai_completion(model: str, reply: str) -> dict:
    n = len(_words(reply))
    return {"id": "chatcmpl-h2", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}}


def openai_events(model: str, reply: str) -> list[bytes]:
    """chat.completion.chunk events (`data: {...}`), the last with finish_reason, then `data: [DONE]`."""
    def chunk(delta, finish=None):
        return {"id": "chatcmpl-h2", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": w}) for w in _words(reply)] + [chunk({}, "stop")]
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]


def anthropic_message(model: str, reply: str) -> dict:
    return {"id": "msg_h2", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": len(_words(reply))}}


def anthropic_events(model: str, reply: str) -> list[bytes]:
    """Anthropic's stream: message_start, content_block_start, content_block_delta per word,
    content_block_stop, message_delta (stop_reason, usage), message_stop; each `event:` + `data:`."""
    message = {"id": "msg_h2", "type": "message", "role": "assistant", "model": model, "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 0}}
    words = _words(reply)
    events = [("message_start", {"type": "message_start", "message": message}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": w}}) for w in words]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": len(words)}}),
               ("message_stop", {"type": "message_stop"})]
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]


@dataclasses.dataclass
class Seen:
    """One request the server processed (read whole and handed to its handler)."""

    method: str
    target: str  # path with query, as received
    connection: int  # 1 for the first connection accepted
    stream_id: int  # HTTP/2 stream id; for HTTP/1.1 the request's number on its connection
    protocol: str  # "h2" or "http/1.1"
    headers: list  # [(name, value)] as received, lowercase names, pseudo-headers included
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None


@dataclasses.dataclass
class ConnInfo:
    """What the server knows of one accepted connection."""

    index: int
    protocol: str | None = None  # "h2" / "http/1.1"; None until known (or never, if it failed)
    alpn: str | None = None
    streams: int = 0  # streams the client opened (HTTP/1.1: requests read), refused ones included
    processed: int = 0  # requests processed (see Seen)
    open: int = 0  # streams open now
    max_open: int = 0  # most streams open at once (counting a stream over the limit too)
    refused: int = 0  # streams reset with REFUSED_STREAM (refuse_next, or over the limit)
    ignored: int = 0  # streams opened after our GOAWAY, above its last stream id (not processed)
    pings: int = 0
    goaway_last_stream_id: int | None = None  # the last stream id of the GOAWAY we sent
    client_goaway: int | None = None  # error code of a GOAWAY the client sent
    dead: bool = False  # stopped reading and writing (ignore_pings)
    closed: bool = False


class _StreamGone(Exception):
    """The stream (or its connection) went away while a handler was answering it."""


class H2Server:
    def __init__(self, *, tls: bool = False, alpn=("h2", "http/1.1"), max_concurrent_streams: int = 100,
                 http1: bool = True, ca: trustme.CA | None = None):
        self.tls = tls
        self.alpn = list(alpn)
        self.max_concurrent_streams = max_concurrent_streams
        self.http1 = http1
        self.llm_delay = 0.0  # seconds the LLM endpoints wait before answering (overlaps calls)
        self.llm_stream_pause = 0.0  # seconds their event streams pause before the last event
        self.lock = threading.Lock()
        # counters (written on the server's loop under self.lock)
        self.connections = 0  # TCP connections accepted
        self.tls_handshakes = 0  # TLS handshakes completed
        self._conns: list[ConnInfo] = []
        self._seen: list[Seen] = []
        self._resets: list[tuple[int, int, int]] = []  # (connection, stream id, error code)
        self.pings = 0
        self.refused = 0
        self.limit_violations = 0  # streams the client opened beyond max_concurrent_streams
        self.protocol_errors: list[str] = []  # what the h2 state machine refused (client bugs)
        self.open_total = 0
        self.max_open_total = 0
        # controls
        self._refuse = 0
        self._goaway_next = 0
        self._ignore_pings = False
        # TLS
        self.ca = ca or (trustme.CA() if tls else None)
        self.ca_path = None
        self._ssl = None
        if tls:
            self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._ssl)
            self._ssl.set_alpn_protocols(self.alpn)
            fd, self.ca_path = tempfile.mkstemp(prefix="h2server-ca-", suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(self.ca.cert_pem.bytes())
        self.port = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._handlers: set = set()  # live _H2Conn / _H1Conn
        self._tasks: set = set()
        self._writers: set = set()  # every accepted connection's writer, until it is closed
        self._accepted: set = set()  # every accepted socket, until its connection is served

    # --- life cycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        """The pool's key for this server (scheme://host:port)."""
        return self.url

    def client_context(self) -> ssl.SSLContext:
        """An SSLContext trusting this server's CA (for httpx's stock transports)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def start(self) -> "H2Server":
        ready = threading.Event()
        error = []
        self._loop = asyncio.new_event_loop()

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._listener = socket.socket()
                self._listener.bind(("127.0.0.1", 0))
                self._listener.listen(1024)
                self._listener.setblocking(False)
                self.port = self._listener.getsockname()[1]
                self._loop.add_reader(self._listener.fileno(), self._accept)
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                error.append(exc)
                ready.set()
                return
            ready.set()
            try:
                self._loop.run_forever()
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="h2server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if error:
            self._loop.close()
            raise error[0]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None
            if self.ca_path:
                with contextlib.suppress(OSError):
                    os.unlink(self.ca_path)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    async def _shutdown(self):
        self._loop.remove_reader(self._listener.fileno())
        self._listener.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in list(self._accepted):  # those whose task was cancelled before it began
            sock.close()
        for _ in range(3):  # lets the aborted transports run their connection_lost
            await asyncio.sleep(0)

    def _call(self, fn, *args):
        """Runs fn(*args) on the server's loop and returns its result."""
        async def call():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def _spawn(self, coro):
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- controls -----------------------------------------------------------------------------

    def goaway(self, last_stream_id: int | None = None, error_code: int = 0) -> None:
        """Sends GOAWAY on every HTTP/2 connection. Graceful by default: the last stream id is
        the highest one processed so far on each connection; the streams up to it are answered,
        streams the client opens later are ignored (not processed), and the connection is
        closed once its last answer is sent. An error_code other than 0 closes the connection
        at once after the frame. An explicit last_stream_id applies to every connection;
        streams above it that were being answered are abandoned."""
        self._call(self._goaway_all, last_stream_id, error_code)

    def _goaway_all(self, last_stream_id, error_code):
        for handler in list(self._handlers):
            if isinstance(handler, _H2Conn):
                handler.goaway(last_stream_id, error_code)

    def refuse_next(self, n: int = 1) -> None:
        """RST_STREAM(REFUSED_STREAM) the next n new streams, without processing them."""
        with self.lock:
            self._refuse += n

    def goaway_on_next_stream(self, n: int = 1) -> None:
        """The next n new streams are each answered by a graceful GOAWAY on their connection,
        whose last stream id is the highest processed there (below theirs): never processed, the
        client must send them again on another connection. Deterministic, where goaway() races
        with the client."""
        with self.lock:
            self._goaway_next += n

    def _take_goaway_next(self) -> bool:
        with self.lock:
            if self._goaway_next > 0:
                self._goaway_next -= 1
                return True
            return False

    def _take_refusal(self) -> bool:
        with self.lock:
            if self._refuse > 0:
                self._refuse -= 1
                return True
            return False

    @property
    def ignore_pings(self) -> bool:
        return self._ignore_pings

    @ignore_pings.setter
    def ignore_pings(self, value: bool) -> None:
        """True: every connection stops reading (so PINGs go unanswered) and stops writing, as a
        dead peer would, with its TCP socket left open. Sticky per connection: a connection that
        went dead stays dead. Connections accepted while True are dead from the start (a TLS
        handshake still completes: asyncio does it)."""
        with self.lock:
            self._ignore_pings = value
        if value and self._loop is not None:
            self._call(lambda: [h.go_dead() for h in list(self._handlers)])

    def close_all(self) -> None:
        """Closes every connection abruptly (TCP RST, no GOAWAY)."""
        self._call(lambda: [h.abort(rst=True) for h in list(self._handlers)])

    # --- counters (snapshots) -----------------------------------------------------------------

    def connection_infos(self) -> list[ConnInfo]:
        with self.lock:
            return [dataclasses.replace(c) for c in self._conns]

    def requests(self) -> list[Seen]:
        """The requests processed, in order."""
        with self.lock:
            return list(self._seen)

    def seen(self) -> list[tuple[str, str]]:
        """(method, target) of every request processed, in order."""
        with self.lock:
            return [(s.method, s.target) for s in self._seen]

    def protocols(self, path: str | None = None) -> dict[str, int]:
        """How many requests (to `path`, or to any) were processed over each protocol:
        {"h2": n, "http/1.1": m}, only the protocols seen."""
        with self.lock:
            counts: dict[str, int] = {}
            for s in self._seen:
                if path in (None, s.path):
                    counts[s.protocol] = counts.get(s.protocol, 0) + 1
            return counts

    def count(self, method: str | None = None, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for s in self._seen if method in (None, s.method) and path in (None, s.path))

    def resets(self) -> list[tuple[int, int, int]]:
        """(connection, stream id, error code) of every RST_STREAM the client sent."""
        with self.lock:
            return list(self._resets)

    def streams_per_connection(self) -> list[int]:
        with self.lock:
            return [c.streams for c in self._conns]

    @property
    def max_open_per_connection(self) -> int:
        """The most streams open at once on any one connection."""
        with self.lock:
            return max((c.max_open for c in self._conns), default=0)

    @property
    def max_open_streams(self) -> int:
        """The most streams open at once over all connections."""
        with self.lock:
            return self.max_open_total

    @property
    def open_streams(self) -> int:
        with self.lock:
            return self.open_total

    def wait_for(self, condition, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    # --- connections --------------------------------------------------------------------------

    def _accept(self):
        # A reader callback rather than `loop.sock_accept`: a task awaiting sock_accept, cancelled
        # by stop() just as a connection arrives, can lose the socket accepted for it (asyncio logs
        # InvalidStateError and the socket lingers until a later garbage collection).
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # (EMFILE and the like: the client sees its connect refused or time out)
            sock.setblocking(False)
            self._accepted.add(sock)
            self._spawn(self._serve(sock))

    async def _serve(self, sock: socket.socket):
        try:
            await self._serve_accepted(sock)
        finally:
            self._accepted.discard(sock)

    async def _serve_accepted(self, sock: socket.socket):
        loop = asyncio.get_running_loop()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self.connections += 1
            info = ConnInfo(index=self.connections)
            self._conns.append(info)
            dead = self._ignore_pings
        reader = asyncio.StreamReader(limit=2**20, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            # (The TLS handshake is done here, before any byte reaches the reader.)
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock=sock, ssl=self._ssl, ssl_handshake_timeout=10 if self.tls else None)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, EOFError):
            sock.close()
            with self.lock:
                info.closed = True
            return
        except asyncio.CancelledError:
            sock.close()
            raise
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self._writers.add(writer)
        handler = None
        try:
            initial = b""
            if self.tls:
                with self.lock:
                    self.tls_handshakes += 1
                info.alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
                speaks = "h2" if info.alpn == "h2" else "http/1.1"
            else:
                while len(initial) < len(PREFACE) and PREFACE.startswith(initial):
                    data = await reader.read(65536)
                    if not data:
                        return
                    initial += data
                speaks = "h2" if initial.startswith(PREFACE) else "http/1.1"
                if speaks == "http/1.1" and not self.http1:
                    return
            with self.lock:
                info.protocol = speaks
                dead = dead or self._ignore_pings
            cls = _H2Conn if speaks == "h2" else _H1Conn
            handler = cls(self, info, reader, writer)
            self._handlers.add(handler)
            if dead:
                handler.go_dead()
            await handler.run(initial)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, _StreamGone):
            pass
        except asyncio.CancelledError:
            pass  # stop()
        finally:
            if handler is not None:
                self._handlers.discard(handler)
                handler.finish()
            with self.lock:
                info.closed = True
            if handler is None:
                writer.transport.abort()
            elif not writer.transport.is_closing():
                writer.close()  # what was written is flushed first
            try:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2)
            finally:
                writer.transport.abort()  # (a no-op once closed)
                self._writers.discard(writer)

    # --- handlers -----------------------------------------------------------------------------

    async def _handle(self, req: Seen, resp) -> None:
        query = dict(parse_qsl(urlsplit(req.target).query))
        path = req.path
        if req.method == "POST" and path in LLM_PATHS:
            await self._llm(req, resp)
        elif path == "/sse":
            n, delay = int(query.get("events", 5)), float(query.get("delay", 0))
            await resp.start(200, [("content-type", "text/event-stream"), ("cache-control", "no-cache")])
            for i in range(n):
                if i and delay:
                    await asyncio.sleep(delay)
                await resp.send(f'data: {{"i": {i}}}\n\n'.encode())
            if delay and n:
                await asyncio.sleep(delay)
            await resp.send(b"data: [DONE]\n\n", end=True)
        elif path == "/hang":
            await resp.start(200, [("content-type", "application/json")])
            await asyncio.get_running_loop().create_future()  # until cancelled
        elif path == "/big":
            size = int(query.get("size", 1_000_000))
            await resp.start(200, [("content-type", "application/octet-stream"), ("content-length", str(size))])
            body = pattern(size)
            for i in range(0, size, 65536):
                await resp.send(body[i:i + 65536])
            await resp.send(b"", end=True)
        else:
            status = 200
            if path == "/slow":
                await asyncio.sleep(float(query.get("delay", 1)))
            elif path == "/status":
                status = int(query.get("code", 200))
            body = json.dumps({
                "method": req.method, "path": req.target, "body_length": len(req.body),
                "headers": [list(h) for h in req.headers], "connection": req.connection,
                "stream_id": req.stream_id, "protocol": req.protocol,
            }).encode()
            await resp.start(status, [("content-type", "application/json"), ("content-length", str(len(body)))])
            await resp.send(body, end=True)

    async def _llm(self, req: Seen, resp) -> None:
        """POST /v1/chat/completions (OpenAI) or /v1/messages (Anthropic): the reply echoes the
        last user message ("echo: <text>"), as JSON, or as the API's event stream when the body
        asks for "stream": true. A body that is not such a request gets a 400."""
        try:
            request = json.loads(req.body)
            prompt = request["messages"][-1]["content"]
            if isinstance(prompt, list):
                prompt = "".join(part.get("text", "") for part in prompt)
            model, stream = request.get("model", ""), bool(request.get("stream"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            body = json.dumps({"error": {"type": "invalid_request_error", "message": "not a chat request"}}).encode()
            await resp.start(400, [("content-type", "application/json"), ("content-length", str(len(body)))])
            await resp.send(body, end=True)
            return
        if self.llm_delay:
            await asyncio.sleep(self.llm_delay)
        reply = f"echo: {prompt}"
        if req.path == "/v1/chat/completions":
            events = openai_events(model, reply) if stream else None
            payload = None if stream else openai_completion(model, reply)
        else:
            events = anthropic_events(model, reply) if stream else None
            payload = None if stream else anthropic_message(model, reply)
        if payload is not None:
            body = json.dumps(payload).encode()
            await resp.start(200, [("content-type", "application/json"), ("content-length", str(len(body)))])
            await resp.send(body, end=True)
            return
        await resp.start(200, [("content-type", "text/event-stream"), ("cache-control", "no-cache")])
        for event in events[:-1]:
            await resp.send(event)
        if self.llm_stream_pause:
            await asyncio.sleep(self.llm_stream_pause)
        await resp.send(events[-1], end=True)

    def _processed(self, info: ConnInfo, seen: Seen) -> None:
        with self.lock:
            info.processed += 1
            self._seen.append(seen)

    def _opened(self, info: ConnInfo) -> None:
        with self.lock:
            info.open += 1
            info.max_open = max(info.max_open, info.open)
            self.open_total += 1
            self.max_open_total = max(self.max_open_total, self.open_total)

    def _closed(self, info: ConnInfo) -> None:
        with self.lock:
            info.open -= 1
            self.open_total -= 1


class _H2Stream:
    def __init__(self, stream_id: int, headers: list):
        self.id = stream_id
        self.headers = headers
        self.body = bytearray()
        self.task: asyncio.Task | None = None
        self.window = asyncio.Event()
        self.done = False  # answered, reset, or abandoned
        self.seen: Seen | None = None


class _H2Conn:
    def __init__(self, server: H2Server, info: ConnInfo, reader, writer):
        self.server, self.info, self.reader, self.writer = server, info, reader, writer
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        advertised = {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server.max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
        }
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values=advertised)
        self.h2.initiate_connection()
        # The limit is advertised, but enforced here (so a stream over it is counted and refused)
        # rather than by h2, which would raise TooManyStreamsError and end the connection.
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            **advertised, h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: UNLIMITED})
        self.streams: dict[int, _H2Stream] = {}
        self.ignored: set[int] = set()
        self.highest_processed = 0
        self.goaway_last: int | None = None
        self.closing = False
        self.parked = asyncio.Event()

    # -- output

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.info.dead and not self.writer.transport.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        if not self.info.dead:
            try:
                await self.writer.drain()
            except (OSError, RuntimeError) as exc:
                raise _StreamGone() from exc

    # -- input

    async def run(self, initial: bytes) -> None:
        self.flush()
        if initial and not self.feed(initial):
            return
        while not self.closing:
            if self.info.dead:
                await self.parked.wait()  # never set: until the connection is aborted
                return
            data = await self.reader.read(65536)
            if not data:
                return
            if self.info.dead:
                continue  # a dead peer reads nothing
            if not self.feed(data):
                return

    def feed(self, data: bytes) -> bool:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            with self.server.lock:
                self.server.protocol_errors.append(f"connection {self.info.index}: {exc!r}")
            self.flush()
            return False
        for event in events:
            self.on_event(event)
        self.flush()
        return not self.closing

    def on_event(self, event) -> None:
        server, info = self.server, self.info
        if isinstance(event, h2.events.RequestReceived):
            self.on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.done:
                stream.body += event.data
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.done and stream.task is None:
                method = dict(stream.headers).get(":method", "")
                target = dict(stream.headers).get(":path", "")
                stream.seen = Seen(method, target, info.index, stream.id, "h2", stream.headers, bytes(stream.body))
                server._processed(info, stream.seen)
                stream.task = server._spawn(self.serve(stream))
        elif isinstance(event, h2.events.StreamReset):
            if event.remote_reset:
                with server.lock:
                    server._resets.append((info.index, event.stream_id, int(event.error_code)))
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self.stream_done(stream)
                stream.window.set()
                if stream.task is not None:
                    stream.task.cancel()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                for stream in self.streams.values():
                    stream.window.set()
            elif event.stream_id in self.streams:
                self.streams[event.stream_id].window.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for stream in self.streams.values():
                stream.window.set()
        elif isinstance(event, h2.events.PingReceived):
            with server.lock:
                info.pings += 1
                server.pings += 1
        elif isinstance(event, h2.events.ConnectionTerminated):
            with server.lock:
                info.client_goaway = int(event.error_code)
            self.closing = True

    def on_request(self, event) -> None:
        server, info = self.server, self.info
        sid = event.stream_id
        with server.lock:
            info.streams += 1
        if self.goaway_last is None and server._take_goaway_next():
            self.goaway(None, 0)  # last stream id: the highest processed, below sid
        if self.goaway_last is not None and sid > self.goaway_last:
            self.ignored.add(sid)  # after our GOAWAY: ignored, as RFC 9113 §6.8 says
            with server.lock:
                info.ignored += 1
            return
        over = sum(1 for s in self.streams.values() if not s.done) >= server.max_concurrent_streams
        if over or server._take_refusal():
            with server.lock:
                if over:
                    server.limit_violations += 1
                    info.max_open = max(info.max_open, info.open + 1)
                info.refused += 1
                server.refused += 1
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        stream = _H2Stream(sid, list(event.headers))
        self.streams[sid] = stream
        self.highest_processed = max(self.highest_processed, sid)
        server._opened(info)

    def stream_done(self, stream: _H2Stream) -> None:
        if not stream.done:
            stream.done = True
            self.server._closed(self.info)
            self.streams.pop(stream.id, None)
            self.maybe_finish()

    async def serve(self, stream: _H2Stream) -> None:
        try:
            await self.server._handle(stream.seen, _H2Responder(self, stream))
        except (_StreamGone, h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, OSError):
            pass
        finally:
            self.stream_done(stream)

    # -- controls

    def goaway(self, last_stream_id, error_code) -> None:
        if self.info.closed or self.closing and self.goaway_last is None:
            return
        last = self.highest_processed if last_stream_id is None else last_stream_id
        if self.goaway_last is not None:
            last = min(last, self.goaway_last)
        self.goaway_last = last
        with self.server.lock:
            self.info.goaway_last_stream_id = last
        self.flush()
        frame = GoAwayFrame(0)
        frame.last_stream_id = last
        frame.error_code = error_code
        if not self.info.dead and not self.writer.transport.is_closing():
            self.writer.write(frame.serialize())
        for stream in list(self.streams.values()):
            if stream.id > last:
                if stream.task is not None:
                    stream.task.cancel()
                self.stream_done(stream)
        if error_code:
            self.closing = True
            self.writer.close()
        else:
            self.maybe_finish()

    def maybe_finish(self) -> None:
        """After a graceful GOAWAY: closes the connection once no processed stream is open."""
        if self.goaway_last is not None and not self.streams and not self.closing:
            self.closing = True
            self.flush()
            self.writer.close()

    def go_dead(self) -> None:
        with self.server.lock:
            self.info.dead = True

    def abort(self, rst: bool) -> None:
        self.closing = True
        self.parked.set()
        transport = self.writer.transport
        if rst:
            with contextlib.suppress(OSError, AttributeError):
                self.writer.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def finish(self) -> None:
        """The connection is gone: its streams are too."""
        for stream in list(self.streams.values()):
            if stream.task is not None:
                stream.task.cancel()
            self.stream_done(stream)


class _H2Responder:
    def __init__(self, conn: _H2Conn, stream: _H2Stream):
        self.conn, self.stream = conn, stream

    async def start(self, status: int, headers: list) -> None:
        if self.stream.done:
            raise _StreamGone()
        self.conn.h2.send_headers(self.stream.id, [(":status", str(status)), *headers])
        self.conn.flush()

    async def send(self, data: bytes, end: bool = False) -> None:
        conn, h2c, sid = self.conn, self.conn.h2, self.stream.id
        offset = 0
        while offset < len(data):
            if self.stream.done:
                raise _StreamGone()
            size = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size, len(data) - offset)
            if size <= 0:
                self.stream.window.clear()
                await self.stream.window.wait()
                continue
            h2c.send_data(sid, data[offset:offset + size])
            offset += size
            conn.flush()
            await conn.drain()
        if end:
            if self.stream.done:
                raise _StreamGone()
            h2c.end_stream(sid)
            conn.flush()


class _H1Conn:
    """Minimal HTTP/1.1: sequential keep-alive requests with Content-Length bodies."""

    def __init__(self, server: H2Server, info: ConnInfo, reader, writer):
        self.server, self.info, self.reader, self.writer = server, info, reader, writer
        self.buffer = b""
        self.parked = asyncio.Event()

    async def _fill(self) -> bool:
        data = await self.reader.read(65536)
        if not data:
            return False
        self.buffer += data
        return True

    async def run(self, initial: bytes) -> None:
        self.buffer = initial
        number = 0
        while True:
            while b"\r\n\r\n" not in self.buffer:
                if not await self._fill():
                    return
            if self.info.dead:
                await self.parked.wait()
                return
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower(), value.strip()))
            fields = dict(headers)
            length = int(fields.get("content-length", "0"))
            while len(self.buffer) < length:
                if not await self._fill():
                    return
            body, self.buffer = self.buffer[:length], self.buffer[length:]
            number += 1
            with self.server.lock:
                self.info.streams += 1
            seen = Seen(method, target, self.info.index, number, "http/1.1", headers, body)
            self.server._processed(self.info, seen)
            self.server._opened(self.info)
            try:
                responder = _H1Responder(self)
                await self.server._handle(seen, responder)
            finally:
                self.server._closed(self.info)
            if fields.get("connection", "").lower() == "close":
                return

    def go_dead(self) -> None:
        with self.server.lock:
            self.info.dead = True

    def abort(self, rst: bool) -> None:
        self.parked.set()
        if rst:
            with contextlib.suppress(OSError, AttributeError):
                self.writer.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def finish(self) -> None:
        pass


class _H1Responder:
    def __init__(self, conn: _H1Conn):
        self.conn = conn
        self.chunked = False

    def _write(self, data: bytes) -> None:
        if not self.conn.info.dead and not self.conn.writer.transport.is_closing():
            self.conn.writer.write(data)

    async def start(self, status: int, headers: list) -> None:
        names = {k for k, _ in headers}
        if "content-length" not in names:
            self.chunked = True
            headers = [*headers, ("transfer-encoding", "chunked")]
        phrase = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else "Unknown"
        head = f"HTTP/1.1 {status} {phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        self._write(head.encode("latin-1"))

    async def send(self, data: bytes, end: bool = False) -> None:
        if self.chunked:
            if data:
                self._write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            if end:
                self._write(b"0\r\n\r\n")
        elif data:
            self._write(data)
        try:
            await self.conn.writer.drain()
        except (OSError, RuntimeError) as exc:
            raise _StreamGone() from exc
