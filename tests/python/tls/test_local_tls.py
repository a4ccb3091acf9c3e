"""The bundled server over TLS (demo/local_server.py's `throwaway_tls`): it serves clients that
trust the CA file it wrote, and counts full and resumed handshakes on its side."""

import socket
import ssl

from relay import Relay
from local_server import Server, throwaway_tls


def get(port, client, session=None):
    """One request on a new TLS connection; returns the session to resume and whether this one
    resumed an earlier session."""
    with client.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1",
                            session=session) as sock:
        sock.sendall(b"GET /json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")  # TLS 1.3 tickets come before the answer
        return sock.session, sock.session_reused


def test_handshakes_are_counted_full_then_resumed(tmp_path):
    context, ca_path = throwaway_tls(tmp_path)
    client = ssl.create_default_context(cafile=ca_path)
    with Server(tls=context) as server:
        session, resumed = get(server.port, client)
        assert not resumed and (server.tls_handshakes_full, server.tls_handshakes_resumed) == (1, 0)
        _, resumed = get(server.port, client, session)
        assert resumed and (server.tls_handshakes_full, server.tls_handshakes_resumed) == (1, 1)
        get(server.port, client)  # no session given: a full handshake again
        assert (server.tls_handshakes_full, server.tls_handshakes_resumed, server.connections) == (2, 1, 3)


def test_tls_passes_through_the_relay(tmp_path):
    context, ca_path = throwaway_tls(tmp_path)
    client = ssl.create_default_context(cafile=ca_path)
    with Server(tls=context) as server, Relay(server.port, rtt=0.02) as relay:
        session, _ = get(relay.port, client)
        _, resumed = get(relay.port, client, session)
        assert resumed and (server.tls_handshakes_full, server.tls_handshakes_resumed) == (1, 1)
        assert relay.connections == server.connections == 2
