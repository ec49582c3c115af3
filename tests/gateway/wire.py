"""The gateway's protocol over in-memory bytes (httpcore's mock stream): a real
Gateway and KafkaProtocol in this process, talking to a real supervisor, with a
transport that keeps what is written instead of a socket."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from shmbroker.config import BrokerConfig, Listener
from shmbroker.gateway.server import Gateway, KafkaProtocol
from shmbroker.kafka import codec


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0  # writelines/write calls: one per burst
        self.closed = False
        self.reading = True
        self.changed = asyncio.Event()

    def write(self, data: Any) -> None:
        self.writelines([data])

    def writelines(self, buffers: Any) -> None:
        assert not self.closed, "write after close"
        self.writes += 1
        for b in buffers:
            self.written += b
        self.changed.set()

    def close(self) -> None:
        self.closed = True
        self.changed.set()

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("memory", 0) if name == "peername" else default

    def set_write_buffer_limits(self, high: Any = None, low: Any = None) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Wire:
    """One connection to an in-process gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.protocol = KafkaProtocol(gateway)
        self.transport = MemoryTransport()
        self.protocol.connection_made(self.transport)
        self._correlation = 0
        self._read_at = 0

    def send(self, api_key: int, version: int, body: Any) -> int:
        """Send a request (a kio message or raw body bytes); its correlation id."""
        self._correlation += 1
        raw = body if isinstance(body, bytes | bytearray) else codec.encode(body)
        self.feed(codec.frame_request(api_key, version, self._correlation, bytes(raw)))
        return self._correlation

    def feed(self, data: bytes) -> None:
        self.protocol.data_received(data)

    async def response(self, timeout: float = 10) -> tuple[int, bytes]:
        """The next response frame: (correlation id, body)."""
        return await asyncio.wait_for(self._response(), timeout)

    async def _response(self) -> tuple[int, bytes]:
        while True:
            buf = self.transport.written
            if len(buf) - self._read_at >= 4:
                (size,) = struct.unpack_from(">i", buf, self._read_at)
                if len(buf) - self._read_at - 4 >= size:
                    start = self._read_at + 4
                    self._read_at = start + size
                    (cid,) = struct.unpack_from(">i", buf, start)
                    return cid, bytes(buf[start + 4 : start + size])
            assert not self.transport.closed, "the gateway closed the connection"
            self.transport.changed.clear()
            await self.transport.changed.wait()

    def pending(self) -> int:
        """Bytes written and not yet read as responses."""
        return len(self.transport.written) - self._read_at

    async def call(
        self, api_key: int, version: int, body: Any, timeout: float = 10
    ) -> Any:
        """Send a request and decode its response with kio."""
        cid = self.send(api_key, version, body)
        got, raw = await self.response(timeout)
        assert got == cid
        return codec.decode_response(api_key, version, raw)

    async def closed(self, timeout: float = 10) -> None:
        async def wait() -> None:
            while not self.transport.closed:
                self.transport.changed.clear()
                await self.transport.changed.wait()

        await asyncio.wait_for(wait(), timeout)


def request(api_key: int, version: int, **fields: Any) -> Any:
    """A kio request message from plain values (nested ones built by the caller)."""
    return codec.build(codec.request_type(api_key, version), **fields)


def make_gateway(data_dir: str, **config: Any) -> Gateway:
    return Gateway(
        BrokerConfig(data_dir=data_dir, listeners="", **config),
        Listener("127.0.0.1", 9),
    )
