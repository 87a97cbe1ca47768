"""Asterisk AudioSocket over TCP (`voicebot serve --audiosocket PORT`): the same calls, another link."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .gateways.audiosocket import AudioSocketParser, PacedSender
from .gateways.base import Codec, Frame, Inbound, Outbound
from .server import LinkClosed, Route, VoiceServer

log = logging.getLogger(__name__)
READ_BYTES = 65_536


class AudioSocketCodec(Codec):
    """The AudioSocket parser behind the common codec interface."""

    name = "audiosocket"
    path = "audiosocket"  # a TCP listener, not a URL path; used as the route's label

    def __init__(self, *, query: dict[str, str] | None = None, plan: str = "") -> None:
        super().__init__(query=query)
        self.parser = AudioSocketParser(plan=plan)

    def decode(self, frame: Frame) -> list[Inbound]:
        """Bytes read from the socket, however they were split."""
        return self.parser.feed(frame if isinstance(frame, bytes) else frame.encode())

    def encode(self, message: Outbound) -> list[Frame]:
        """Frames for one of our actions (20 ms audio frames, or hangup)."""
        return list(self.parser.encode(message))


class TcpLink:
    """A TCP connection whose outgoing audio we pace ourselves, 20 ms a frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sender = PacedSender(writer)
        self._pacer = asyncio.create_task(self.sender.run(), name="audiosocket-pacer")

    async def recv(self) -> Frame:
        """The next bytes from the socket."""
        try:
            data = await self.reader.read(READ_BYTES)
        except (ConnectionError, OSError) as err:
            raise LinkClosed from err
        if not data:
            raise LinkClosed
        return data

    async def send(self, frame: Frame) -> None:
        """Queue a frame behind the ones still waiting for their 20 ms slot."""
        if self.writer.is_closing():
            raise LinkClosed
        self.sender.send([frame if isinstance(frame, bytes) else frame.encode()])

    def flush(self) -> None:
        """Barge-in: drop every frame not yet written."""
        self.sender.flush()

    async def close(self, code: int, reason: str) -> None:
        """Let queued frames play out (the goodbye), then close the socket."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.sender.pending * 0.02 + 1.0):
                # The pacer drains on its own 20 ms clock and signals nothing: look once a frame.
                while self.sender.pending and not self.writer.is_closing():  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        self._pacer.cancel()
        await asyncio.gather(self._pacer, return_exceptions=True)
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def serve_audiosocket(server: VoiceServer, *, host: str, port: int, plan: str,
                            max_calls: int = 100) -> asyncio.Server:
    """Listen for AudioSocket calls; each runs like a websocket call, with the route's default plan."""
    route = Route(path="audiosocket", codec=AudioSocketCodec, plan=plan, max_calls=max_calls)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not server.has_room(route):
            log.warning("audiosocket: refusing a call, %d calls is the limit", max_calls)
            writer.close()
            return
        await server.run_call(TcpLink(reader, writer), route, AudioSocketCodec(plan=plan))

    tcp = await asyncio.start_server(handle, host, port)
    log.info("AudioSocket on %s:%d", host, tcp.sockets[0].getsockname()[1])
    return tcp
