"""demo/relay.py, the WAN stand-in: bytes pass intact and in order, each exchange costs at least
the round trip it adds (a new connection one more), ends of stream and resets get through, and
every connection is counted. Times are lower bounds only: this machine is noisy."""

import os
import socket
import struct
import threading
import time

import pytest

from relay import Relay
from servers import Server

RTT = 0.1


class EchoServer:
    """Sends back every byte it receives; on the client's end of stream it ends its own side.
    `endings` records how each connection ended: "eof" or "reset"."""

    def __init__(self):
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.accepted = 0
        self.endings: list[str] = []
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _echo(self, conn):
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
                self.endings.append("eof")
            except ConnectionResetError:
                self.endings.append("reset")

    def wait_for_endings(self, n):
        deadline = time.monotonic() + 10
        while len(self.endings) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.endings

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(relay):
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)  # a hang fails here, not at the suite timeout
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def exchange(sock, payload=b"ping"):
    """Sends payload and reads back as many bytes; returns the seconds it took."""
    start = time.monotonic()
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        data = sock.recv(65536)
        assert data, "closed early"
        received += data
    assert received == payload
    return time.monotonic() - start


def read_to_end(sock):
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def test_large_transfers_arrive_intact_and_in_order_both_ways():
    payload = os.urandom(4_000_000)
    with EchoServer() as echo, Relay(echo.port, rtt=0.02) as relay, connect(relay) as sock:
        def send():
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        received = read_to_end(sock)  # the echo's end of stream follows the client's
        sender.join()
    assert received == payload


def test_an_exchange_costs_a_round_trip_and_a_new_connection_one_more():
    with EchoServer() as echo, Relay(echo.port, rtt=RTT) as relay:
        start = time.monotonic()
        with connect(relay) as sock:
            exchange(sock)
            first = time.monotonic() - start  # from before connect(): the handshake's round trip too
            later = [exchange(sock, b"x" * n) for n in (1, 1000, 100_000)]
    assert first >= 2 * RTT
    assert min(later) >= RTT


def test_without_rtt_it_forwards_at_once():
    with EchoServer() as echo, Relay(echo.port, rtt=0) as relay, connect(relay) as sock:
        exchange(sock)
        assert relay.connections == 1


def test_each_end_of_stream_reaches_the_other_side():
    with EchoServer() as echo, Relay(echo.port, rtt=0.02) as relay, connect(relay) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)  # the client's end reaches the echo, whose own end comes back
        assert read_to_end(sock) == b"last words"
        assert echo.wait_for_endings(1) == ["eof"]

    with Server() as server, Relay(server.port, rtt=0.02) as relay, connect(relay) as sock:
        sock.sendall(b"GET /half-close HTTP/1.1\r\nHost: x\r\n\r\n")  # the server ends its side after answering
        assert read_to_end(sock).endswith(b"\r\n\r\nhalf")


def test_a_reset_reaches_the_other_side():
    with Server() as server, Relay(server.port, rtt=0.02) as relay, connect(relay) as sock:
        sock.sendall(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n")  # half a body, then the server resets
        with pytest.raises(ConnectionResetError):
            read_to_end(sock)

    with EchoServer() as echo, Relay(echo.port, rtt=0.02) as relay:
        sock = connect(relay)
        exchange(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset from the client
        assert echo.wait_for_endings(1) == ["reset"]


def test_it_counts_the_connections_made():
    with EchoServer() as echo, Relay(echo.port, rtt=0.02) as relay:
        socks = [connect(relay) for _ in range(5)]
        try:
            for sock in socks:
                exchange(sock)  # answered: the relay has accepted it
        finally:
            for sock in socks:
                sock.close()
        assert relay.connections == echo.accepted == 5
