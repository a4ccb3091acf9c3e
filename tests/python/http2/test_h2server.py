"""Self-test of the HTTP/2 test server (h2server.py), with httpx's own HTTP/2 client and a raw
h2 client over a plain socket (for what httpx cannot show: frames after a GOAWAY, PINGs, resets)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import threading
import time
import warnings

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest
from hyperframe.frame import Frame

from h2server import H2Server, pattern
from helpers import eventually

pytestmark = pytest.mark.timeout(30)


class RawH2:
    """A bare HTTP/2 client (prior knowledge) over a blocking socket."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.events: list = []
        self.goaways: list = []  # GoAwayFrame received
        self.buffer = b""
        self.closed = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method: str, path: str, body: bytes = b"", headers=()) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "127.0.0.1"), *headers]
        self.conn.send_headers(sid, fields, end_stream=not body)
        if body:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()
        return sid

    def pump(self, timeout: float) -> None:
        """Reads for up to `timeout` seconds (until the peer closes)."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return
            except OSError:
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            self.buffer += data
            while len(self.buffer) >= 9 and len(self.buffer) >= 9 + int.from_bytes(self.buffer[:3], "big"):
                size = 9 + int.from_bytes(self.buffer[:3], "big")
                frame, self.buffer = self.buffer[:size], self.buffer[size:]
                if frame[3] == 0x7:  # GOAWAY: kept from h2, whose state machine would refuse later frames
                    goaway, length = Frame.parse_frame_header(memoryview(frame[:9]))
                    goaway.parse_body(memoryview(frame[9:]))
                    self.goaways.append(goaway)
                    continue
                for event in self.conn.receive_data(frame):
                    self.events.append(event)
                    if isinstance(event, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.flush()

    def wait(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.closed or time.monotonic() > deadline:
                return predicate()
            self.pump(0.05)
        return True

    def ended(self, sid: int) -> bool:
        return any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in self.events)

    def of(self, kind, sid=None):
        return [e for e in self.events if isinstance(e, kind) and sid in (None, getattr(e, "stream_id", None))]

    def close(self):
        self.sock.close()


def test_tls_h2_by_alpn_one_connection_many_streams():
    with H2Server(tls=True) as server:
        with httpx.Client(http2=True, verify=server.client_context()) as c:
            for i in range(20):
                r = c.post(f"{server.url}/json?i={i}", content=b"x" * i, headers={"x-tag": str(i)})
                assert (r.status_code, r.http_version, r.reason_phrase) == (200, "HTTP/2", "OK")
                echo = r.json()
                assert (echo["method"], echo["path"], echo["body_length"]) == ("POST", f"/json?i={i}", i)
                assert ["x-tag", str(i)] in echo["headers"] and echo["protocol"] == "h2"
            assert len(c.get(f"{server.url}/big?size=3000000").content) == 3_000_000
        assert (server.connections, server.tls_handshakes) == (1, 1)
        assert server.streams_per_connection() == [21]
        assert server.seen()[:2] == [("POST", "/json?i=0"), ("POST", "/json?i=1")]
        assert [s.header("x-tag") for s in server.requests()[:20]] == [str(i) for i in range(20)]
        (info,) = server.connection_infos()
        assert (info.protocol, info.alpn, info.processed) == ("h2", "h2", 21)


def test_alpn_http11_only_serves_http11_keep_alive():
    with H2Server(tls=True, alpn=["http/1.1"]) as server:
        with httpx.Client(http2=True, verify=server.client_context()) as c:
            for i in range(5):
                r = c.post(f"{server.url}/json", content=b"abc")
                assert (r.http_version, r.json()["body_length"], r.json()["protocol"]) == ("HTTP/1.1", 3, "http/1.1")
            with c.stream("GET", f"{server.url}/sse?events=3") as r:
                assert [line for line in r.iter_lines() if line][-1] == "data: [DONE]"
            assert c.get(f"{server.url}/big?size=100000").content == pattern(100_000)
        assert server.connections == 1 and server.streams_per_connection() == [7]
        assert server.connection_infos()[0].alpn == "http/1.1"


@pytest.mark.parametrize("alpn", [("h2", "http/1.1"), ("http/1.1",)])
def test_llm_endpoints_answer_json_and_event_streams(alpn):
    """OpenAI's /v1/chat/completions and Anthropic's /v1/messages, over HTTP/2 and HTTP/1.1."""
    with H2Server(tls=True, alpn=alpn) as server:
        expected = "HTTP/2" if "h2" in alpn else "HTTP/1.1"
        with httpx.Client(http2=True, verify=server.client_context()) as c:
            ask = {"model": "m", "messages": [{"role": "user", "content": "hi there"}]}
            r = c.post(f"{server.url}/v1/chat/completions", json=ask)
            assert (r.status_code, r.http_version) == (200, expected)
            assert r.json()["choices"][0]["message"]["content"] == "echo: hi there"
            r = c.post(f"{server.url}/v1/messages", json={**ask, "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi there"}]}]})
            assert r.json()["content"] == [{"type": "text", "text": "echo: hi there"}]
            with c.stream("POST", f"{server.url}/v1/chat/completions", json={**ask, "stream": True}) as r:
                assert r.headers["content-type"] == "text/event-stream"
                data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
            assert data[-1] == "[DONE]"
            chunks = [json.loads(d) for d in data[:-1]]
            assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks) == "echo: hi there"
            assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
            with c.stream("POST", f"{server.url}/v1/messages", json={**ask, "stream": True}) as r:
                lines = [line for line in r.iter_lines() if line]
            names = [line[7:] for line in lines if line.startswith("event: ")]
            events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
            assert names == [e["type"] for e in events]
            assert names[:2] == ["message_start", "content_block_start"]
            assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
            assert "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta") == "echo: hi there"
            assert c.post(f"{server.url}/v1/messages", content=b"not json").status_code == 400
            assert c.get(f"{server.url}/v1/messages").json()["method"] == "GET"  # other methods: the echo
        assert server.protocols() == {"h2" if "h2" in alpn else "http/1.1": 6}
        assert server.protocols("/v1/messages") == {"h2" if "h2" in alpn else "http/1.1": 4}
        assert server.connections == 1


def test_cleartext_prior_knowledge_and_http11_sniffing():
    with H2Server() as server:
        with httpx.Client(http1=False, http2=True) as c:
            assert c.get(f"{server.url}/json").http_version == "HTTP/2"
        with httpx.Client(http2=True) as c:  # cleartext: httpx speaks HTTP/1.1
            assert c.get(f"{server.url}/json").http_version == "HTTP/1.1"
        assert [i.protocol for i in server.connection_infos()] == ["h2", "http/1.1"]
    with H2Server(http1=False) as server, httpx.Client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(f"{server.url}/json")


async def test_concurrent_streams_stay_within_the_advertised_limit():
    with H2Server(max_concurrent_streams=10) as server:
        async with httpx.AsyncClient(http1=False, http2=True) as c:
            rs = await asyncio.gather(*[c.get(f"{server.url}/slow?delay=0.1") for _ in range(30)])
        assert {r.status_code for r in rs} == {200}
        assert server.connections == 1
        assert server.max_open_per_connection == 10 and server.max_open_streams == 10
        assert server.limit_violations == 0 and server.open_streams == 0


def test_streams_over_the_limit_are_counted_and_refused():
    with H2Server(max_concurrent_streams=2) as server:
        raw = RawH2(server.port)
        sids = [raw.request("GET", "/hang") for _ in range(3)]
        assert raw.wait(lambda: raw.of(h2.events.StreamReset, sids[2]))
        assert raw.of(h2.events.StreamReset, sids[2])[0].error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        assert (server.limit_violations, server.max_open_per_connection, server.count()) == (1, 3, 2)
        raw.close()


def test_flow_control_both_ways():
    with H2Server() as server, httpx.Client(http1=False, http2=True) as c:
        assert c.post(f"{server.url}/json", content=b"u" * 2_000_000).json()["body_length"] == 2_000_000
        assert c.get(f"{server.url}/big?size=5000000").content == pattern(5_000_000)


async def test_sse_events_in_order_on_many_streams():
    with H2Server() as server:
        async with httpx.AsyncClient(http1=False, http2=True) as c:
            async def one():
                async with c.stream("GET", f"{server.url}/sse?events=5&delay=0.02") as r:
                    return [line async for line in r.aiter_lines() if line]

            results = await asyncio.gather(*[one() for _ in range(20)])
        expected = [f'data: {{"i": {i}}}' for i in range(5)] + ["data: [DONE]"]
        assert all(lines == expected for lines in results)
        assert server.max_open_per_connection == 20


def test_refuse_next_resets_without_processing():
    with H2Server() as server, httpx.Client(http1=False, http2=True) as c:
        server.refuse_next(1)
        with pytest.raises(httpx.RemoteProtocolError):  # (httpcore does not retry a refused stream)
            c.post(f"{server.url}/json", content=b"once")
        assert (server.refused, server.count()) == (1, 0)
        assert c.post(f"{server.url}/json", content=b"once").status_code == 200
        assert server.count("POST") == 1


def test_graceful_goaway_finishes_processed_streams_and_ignores_later_ones():
    with H2Server() as server:
        raw = RawH2(server.port)
        first = raw.request("GET", "/slow?delay=0.5")
        assert server.wait_for(lambda: server.count() == 1)
        server.goaway()
        late = raw.request("POST", "/json", body=b"late")
        assert raw.wait(lambda: raw.ended(first) and raw.closed)
        (goaway,) = raw.goaways
        assert (goaway.last_stream_id, goaway.error_code) == (first, 0)
        assert not raw.of(h2.events.ResponseReceived, late)
        assert server.seen() == [("GET", "/slow?delay=0.5")]
        # (The server closes the socket before it marks the connection closed.)
        assert server.wait_for(lambda: server.connection_infos()[0].closed)
        info = server.connection_infos()[0]
        assert (info.goaway_last_stream_id, info.ignored, info.closed) == (first, 1, True)
        raw.close()
        with httpx.Client(http1=False, http2=True) as c:  # a new connection is served
            assert c.get(f"{server.url}/json").json()["connection"] == 2


def test_client_resets_and_pings_are_counted_and_ignore_pings_goes_silent():
    with H2Server() as server:
        raw = RawH2(server.port)
        sid = raw.request("GET", "/hang")
        assert raw.wait(lambda: raw.of(h2.events.ResponseReceived, sid))
        raw.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        raw.conn.ping(b"12345678")
        raw.flush()
        assert raw.wait(lambda: raw.of(h2.events.PingAckReceived))
        assert server.resets() == [(1, sid, h2.errors.ErrorCodes.CANCEL)]
        assert server.wait_for(lambda: server.open_streams == 0)
        assert server.pings == 1
        server.ignore_pings = True
        raw.conn.ping(b"abcdefgh")
        other = raw.request("GET", "/json")
        raw.pump(0.5)
        assert len(raw.of(h2.events.PingAckReceived)) == 1 and not raw.of(h2.events.ResponseReceived, other)
        assert not raw.closed and server.pings == 1 and server.count() == 1
        server.ignore_pings = False
        raw.close()
        with httpx.Client(http1=False, http2=True) as c:  # a new connection is served
            assert c.get(f"{server.url}/json").status_code == 200


def test_early_close_of_a_stream_in_httpx():
    with H2Server() as server, httpx.Client(http1=False, http2=True) as c:
        with c.stream("GET", f"{server.url}/sse?events=50&delay=0.02") as r:
            next(r.iter_lines())
        assert c.get(f"{server.url}/json").json()["connection"] == 1


def test_close_all_is_abrupt():
    with H2Server() as server:
        raw = RawH2(server.port)
        sid = raw.request("GET", "/hang")
        assert raw.wait(lambda: raw.of(h2.events.ResponseReceived, sid))
        server.close_all()
        raw.pump(2)
        assert raw.closed and not raw.goaways
        raw.close()
        assert server.wait_for(lambda: server.connection_infos()[0].closed and server.open_streams == 0)


def _descriptors() -> dict[str, str]:
    """This process's descriptors, each with what it refers to."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return out


def _tcp_ports_by_inode() -> dict[str, set[int]]:
    """Each TCP socket's inode with its local and remote ports (from /proc/net/tcp and tcp6)."""
    ports: dict[str, set[int]] = {}
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                fields = row.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                ports[inode] = {int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)}
    return ports


def test_a_connection_arriving_as_the_server_stops_is_closed_not_leaked():
    # Before the server accepted in a reader callback, about half of these connections were
    # accepted for a cancelled `sock_accept` and left for a later collection to find unclosed.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(100):
            server = H2Server().start()
            client = socket.create_connection(("127.0.0.1", server.port))
            server.stop()
            client.close()
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_stop_leaves_no_thread_or_descriptor():
    # Other threads of this process (the Rust runtime of earlier tests) may open a descriptor of
    # their own meanwhile, so what is checked is what these servers own: their sockets (by port)
    # and their event loops' epoll and self-pipe descriptors.
    before, threads, ports = _descriptors(), threading.active_count(), set()
    for tls in (False, True):
        with H2Server(tls=tls) as server:
            ports.add(server.port)
            verify = server.client_context() if tls else True
            with httpx.Client(http1=tls, http2=True, verify=verify) as c:
                c.get(f"{server.url}/json")
                with c.stream("GET", f"{server.url}/hang"):
                    pass
            raw = RawH2(server.port) if not tls else None
        if raw:
            raw.close()
    assert threading.active_count() == threads

    def owned(target: str, by_inode: dict[str, set[int]]) -> bool:
        if target == "anon_inode:[eventpoll]":  # an event loop's selector
            return True
        if not target.startswith("socket:"):
            return False
        inode = target[len("socket:["):-1]
        # a TCP socket to or from the servers, or a local one (an event loop's self-pipe)
        return bool(by_inode[inode] & ports) if inode in by_inode else True

    def left() -> dict[str, str]:
        # The collection may free a socket an earlier test left open; its ResourceWarning is that
        # test's, not this one's.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        by_inode = _tcp_ports_by_inode()
        return {fd: target for fd, target in _descriptors().items()
                if before.get(fd) != target and owned(target, by_inode)}

    assert eventually(lambda: not left()), left()
