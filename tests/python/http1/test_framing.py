"""HTTP/1.1 framing as httpx's own transport reads and writes it: where a response body ends,
when a connection may carry the next request, and what a request's own framing says. Each case
runs fast_litellm's transports (sync and async) beside httpx's stock ones, against raw-socket
servers that count connections and keep what they received.
"""

from __future__ import annotations

import socket

import httpx
import pytest

from helpers import eventually
from test_http1 import ALL, OURS, Client, RawServer, answer_every_request, chunk, head, outcome


@pytest.fixture(params=ALL)
def kind(request):
    return request.param


def stock_and(kind, handler, requests):
    """For stock httpx's sync transport and then `kind`, each with a server of its own running
    `handler`: the outcomes of `requests` (a list of (method, path, kw)), sent one after the other
    on one client, and the connections the server accepted."""
    found = []
    for who in ("stock-sync", kind):
        with RawServer(handler) as server, Client(who) as c:
            results = [outcome(lambda m=m, p=p, kw=kw: c.request(m, server.url + p, **kw)) for m, p, kw in requests]
            found.append((results, server.connections, server.received))
    return found


@pytest.mark.parametrize("ours", OURS)
def test_bytes_past_the_end_of_a_response_never_reach_the_next_one(ours):
    # A Content-Length of 2 and 7 bytes: the 5 extra bytes are no response to anything, and the
    # connection they came on cannot carry the next request. A deliberate difference (see
    # docs/transports.md): stock httpx takes them for the start of the next response, which then
    # fails to parse; ours closes that connection and sends the next request on a new one.
    response = head("200 OK", "Content-Length: 2") + b"okEXTRA"
    (stock, _, _), (mine, conns, _) = stock_and(ours, answer_every_request(response), [("GET", "/", {})] * 2)
    assert stock[0].text == "ok" and isinstance(stock[1], httpx.RemoteProtocolError), stock
    assert [getattr(r, "text", r) for r in mine] == ["ok", "ok"]
    assert conns == 2


def test_a_request_asking_for_close_gets_a_new_connection_next_time(kind):
    response = head("200 OK", "Content-Length: 2") + b"ok"
    requests = [("GET", "/", {"headers": {"Connection": "close"}}), ("GET", "/", {})]
    (stock, stock_conns, _), (ours, conns, _) = stock_and(kind, answer_every_request(response), requests)
    assert [r.text for r in stock] == ["ok", "ok"] and stock_conns == 2
    assert [getattr(r, "text", r) for r in ours] == ["ok", "ok"]
    assert conns == stock_conns


def test_a_head_response_has_no_body_and_keeps_its_connection(kind):
    # A HEAD response's Content-Length is the GET's: no body follows, and the connection goes on.
    def handler(peer):
        while request := peer.read_request():
            body = b"hello" if request.method == "GET" else b""
            peer.send(head("200 OK", "Content-Length: 5") + body)

    requests = [("HEAD", "/", {}), ("GET", "/", {}), ("HEAD", "/", {})]
    (stock, stock_conns, _), (ours, conns, _) = stock_and(kind, handler, requests)
    assert [r.content for r in stock] == [b"", b"hello", b""] and stock_conns == 1
    assert [getattr(r, "content", r) for r in ours] == [b"", b"hello", b""]
    assert [r.headers["content-length"] for r in ours] == ["5"] * 3
    assert conns == 1


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_a_204_or_304_has_no_body_whatever_its_length_says(kind, status):
    def handler(peer):
        while request := peer.read_request():
            if request.target == "/empty":
                peer.send(head(status, "Content-Length: 5"))
            else:
                peer.send(head("200 OK", "Content-Length: 2") + b"ok")

    requests = [("GET", "/empty", {}), ("GET", "/", {})]
    (stock, stock_conns, _), (ours, conns, _) = stock_and(kind, handler, requests)
    assert [r.content for r in stock] == [b"", b"ok"] and stock_conns == 1
    assert [getattr(r, "content", r) for r in ours] == [b"", b"ok"]
    assert conns == 1


def test_chunk_extensions_and_trailers_are_skipped_like_stock(kind):
    body = b"5;name=value\r\nhello\r\n" + chunk(b", world") + b"0\r\nX-Trailer: t\r\nY: 2\r\n\r\n"
    response = head("200 OK", "Transfer-Encoding: chunked") + body
    requests = [("GET", "/", {})] * 2
    (stock, stock_conns, _), (ours, conns, _) = stock_and(kind, answer_every_request(response), requests)
    assert [r.content for r in stock] == [b"hello, world"] * 2 and stock_conns == 1
    assert [getattr(r, "content", r) for r in ours] == [b"hello, world"] * 2
    assert conns == 1


@pytest.mark.parametrize("lengths", [["abc"], ["2", "3"], ["2, 3"], ["-1"]])
def test_a_content_length_that_does_not_parse_or_disagrees_is_refused_like_stock(kind, lengths):
    response = head("200 OK", *[f"Content-Length: {v}" for v in lengths]) + b"ok!"
    (stock, _, _), (ours, _, _) = stock_and(kind, answer_every_request(response), [("GET", "/", {})])
    assert type(stock[0]) is httpx.RemoteProtocolError, stock
    assert type(ours[0]) is httpx.RemoteProtocolError, ours


def test_repeats_of_one_content_length_are_one_length_like_stock(kind):
    response = head("200 OK", "Content-Length: 2", "Content-Length: 2") + b"ok"
    (stock, _, _), (ours, _, _) = stock_and(kind, answer_every_request(response), [("GET", "/", {})])
    assert stock[0].content == b"ok"
    assert getattr(ours[0], "content", ours[0]) == b"ok"


def test_a_body_delimited_by_close_ends_there_and_its_connection_too(kind):
    def handler(peer):
        if peer.read_request():
            peer.send(head("200 OK") + b"all of it")

    (stock, _, _), (ours, conns, _) = stock_and(kind, handler, [("GET", "/", {}), ("GET", "/", {})])
    assert stock[0].content == b"all of it"
    assert getattr(ours[0], "content", ours[0]) == b"all of it"
    assert conns == 2 and isinstance(ours[1], httpx.RemoteProtocolError) == isinstance(stock[1], httpx.RemoteProtocolError)


def test_request_bodies_are_framed_as_stock_frames_them(kind):
    # What the server receives, byte for byte, for a body httpx frames by length (bytes), by
    # chunks (a generator: our transports read it whole and send it as one chunk), and none.
    def chunks():
        yield b"hel"
        yield b"lo"

    def handler(peer):
        while True:
            peer.sock.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                more = peer.sock.recv(65536)
                if not more:
                    return
                data += more
            head_bytes, rest = data.split(b"\r\n\r\n", 1)
            chunked = b"transfer-encoding: chunked" in head_bytes.lower()
            while chunked and not rest.endswith(b"0\r\n\r\n"):
                rest += peer.sock.recv(65536)
            length = next((int(line.split(b":")[1]) for line in head_bytes.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while not chunked and len(rest) < length:
                rest += peer.sock.recv(65536)
            with peer.server.lock:
                peer.server.received.append((peer.index, (head_bytes.split(b"\r\n")[0], rest, chunked, length)))
            peer.send(head("200 OK", "Content-Length: 0"))

    requests = [("POST", "/a", {"content": b"hello"}), ("POST", "/b", {"content": chunks()}), ("POST", "/c", {})]
    if kind.endswith("async"):
        async def achunks():
            yield b"hel"
            yield b"lo"
        requests[1] = ("POST", "/b", {"content": achunks()})
    with RawServer(handler) as server, Client("stock-sync") as c:
        for m, p, kw in requests[:1] + [("POST", "/b", {"content": chunks()})] + requests[2:]:
            c.request(m, server.url + p, **kw)
        stock = [r for _, r in server.received]
    with RawServer(handler) as server, Client(kind) as c:
        for m, p, kw in requests:
            assert c.request(m, server.url + p, **kw).status_code == 200
        ours = [r for _, r in server.received]

    def decoded(seen):
        line, raw, chunked, length = seen
        if not chunked:
            return line, raw[:length]
        data, rest = b"", raw
        while True:
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line, 16)
            if size == 0:
                return line, data
            data, rest = data + rest[:size], rest[size + 2:]

    assert [decoded(s) for s in ours] == [decoded(s) for s in stock]
    assert [(s[2], s[3]) for s in ours] == [(s[2], s[3]) for s in stock], "the same framing (chunked, length)"


@pytest.mark.parametrize("fields", [
    [("Content-Length", "9")],
    [("Content-Length", "2")],
    [("Content-Length", "5, 6")],
    [("Content-Length", "5"), ("Content-Length", "6")],
    [("Content-Length", "five")],
    [("Transfer-Encoding", "gzip")],
    [("Transfer-Encoding", "gzip, chunked")],
    [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
], ids=["too-little", "too-much", "conflicting", "conflicting-fields", "bad", "gzip", "gzip-chunked", "twice"])
@pytest.mark.parametrize("ours", OURS)
def test_request_framing_h11_refuses_is_refused_with_its_words_and_never_sent(ours, fields):
    # Stock httpx refuses these with h11's words. A body that does not match its Content-Length
    # it finds only as it sends it, after the head and part of the body, and raises h11's own
    # LocalProtocolError, which is no httpx error (httpcore does not map it there). Ours refuses
    # them all before a byte goes out, with httpx.LocalProtocolError (see docs/transports.md).
    def handler(peer):
        data = b""
        while more := peer.sock.recv(65536):
            data += more
        with peer.server.lock:
            peer.server.received.append((peer.index, data))

    found = []
    for who in ("stock-sync", ours):
        with RawServer(handler) as server:
            with Client(who) as c:
                try:
                    c.request("POST", server.url, content=b"hello", headers=fields)
                except Exception as exc:  # noqa: BLE001 - stock's may be h11's own
                    found.append(exc)
            assert eventually(lambda: len(server.received) == server.connections)
            seen = [data for _, data in server.received]
    stock, ours = found
    assert type(stock).__name__ == "LocalProtocolError", stock
    assert (type(ours), str(ours)) == (httpx.LocalProtocolError, str(stock))
    assert seen in ([], [b""]), seen


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["stock-sync", *OURS])
@pytest.mark.parametrize("says_close", [True, False], ids=["says-close", "says-nothing"])
def test_an_answer_sent_before_the_upload_was_read_is_received(kind, says_close):
    # The server answers 413 after the head and closes, with the body unread: the client's write
    # fails, and the answer is still what the caller gets (httpcore's sync transport reads it after
    # the failed write; its async one raises ReadError instead, so it is left out). The connection
    # is not kept, whether or not the answer says it closes: the request on it was never finished.
    def handler(peer):
        data = b""
        while b"\r\n\r\n" not in data:
            data += peer.sock.recv(65536)
        fields = ["Content-Length: 8"] + (["Connection: close"] if says_close else [])
        peer.send(head("413 Content Too Large", *fields) + b"too big!")
        peer.sock.shutdown(socket.SHUT_WR)
        peer.sock.recv(1)

    kept = []
    for who in ("stock-sync", kind):
        with RawServer(handler) as server, Client(who) as c:
            answer = outcome(lambda: c.request("POST", server.url, content=b"x" * 20_000_000))
            assert isinstance(answer, httpx.Response), (who, answer)
            assert (answer.status_code, answer.content) == (413, b"too big!")
            if who == "stock-sync":
                kept.append(len(c.client._transport._pool.connections))
            else:
                kept.append(c.pool.get_stats()["idle_connections"])
    assert kept == [0, 0]
