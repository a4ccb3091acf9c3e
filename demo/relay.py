"""A stand-in for a wide-area network: a TCP relay on 127.0.0.1 that adds round-trip time to every
connection through it (no netem on the machines this project runs on)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

CHUNK = 65536
# Chunks read but not yet delivered, per direction: a bound on memory, and the back-pressure a
# sender feels from a full TCP window.
IN_FLIGHT = 64


class _Reset(Exception):
    """One side of a relayed connection was reset."""


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends RST
        except OSError:
            pass
    writer.transport.abort()


class Relay:
    """Listens on 127.0.0.1 (an ephemeral `port`) and forwards each connection to
    127.0.0.1:`target_port`, `rtt` seconds of round trip added:

    - each direction delivers each chunk rtt/2 after it was read, in order;
    - a new connection carries no byte, either way, until one rtt after it was accepted: the
      client's connect() returns at once here, where a real TCP handshake costs a round trip;
    - an end of stream (half-close) or a reset on one side reaches the other, after what was
      sent before it.

    `connections` counts the connections accepted. Runs an asyncio loop in a thread of its own;
    `close()` (or leaving the `with` block) stops it and closes the connections still open.
    """

    def __init__(self, target_port: int, rtt: float):
        self.target_port = target_port
        self.rtt = rtt
        self.connections = 0
        self._relays: set[asyncio.Task] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)
        self._thread.start()
        start = asyncio.start_server(self._relay, "127.0.0.1", 0, backlog=1024)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result()
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            for relay in self._relays:
                relay.cancel()
            await asyncio.gather(*self._relays, return_exceptions=True)

        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> "Relay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def _until(self, moment: float) -> None:
        # A loop, not one sleep: the delay is a lower bound, whatever the timer's rounding.
        while (delay := moment - self._loop.time()) > 0:
            await asyncio.sleep(delay)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        accepted = self._loop.time()
        self.connections += 1
        self._relays.add(asyncio.current_task())
        upstream_writer = None
        pipes: list[asyncio.Future] = []
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await self._until(accepted + self.rtt)
            pipes = [asyncio.ensure_future(self._pipe(client_reader, upstream_writer)),
                     asyncio.ensure_future(self._pipe(upstream_reader, client_writer))]
            await asyncio.gather(*pipes)
        except (OSError, _Reset):
            # One side was reset (or the target refused): so is the other, as across a real path.
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    _reset(writer)
        except asyncio.CancelledError:
            pass  # close(): ends here, as asyncio's streams (3.11) log a cancelled handler as an error
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    writer.close()
            self._relays.discard(asyncio.current_task())

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: returns after passing on an end of stream, raises after a reset."""
        in_flight: asyncio.Queue = asyncio.Queue(IN_FLIGHT)

        async def read() -> None:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = None
                await in_flight.put((self._loop.time(), data))
                if not data:
                    return

        reading = asyncio.ensure_future(read())
        try:
            while True:
                read_at, data = await in_flight.get()
                await self._until(read_at + self.rtt / 2)
                if data is None:
                    raise _Reset
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        finally:
            reading.cancel()
