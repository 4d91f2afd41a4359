"""A TCP proxy on 127.0.0.1 that tests put between a client and the real apiserver.

It forwards bytes unchanged (TLS passes through: the apiserver's certificate names
127.0.0.1), and injects the network faults a client must survive:

- ``blackhole()``: connections open now stay open but carry nothing more, in either
  direction (a peer that vanished without a FIN); new connections work.
- ``refuse()``: every connection, open or new, is closed at once (an unreachable server)
  until ``heal()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    blackholed: bool = False

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for writer in (self.client, self.server):
            with contextlib.suppress(Exception):
                writer.transport.abort()


class TcpProxy:
    """``async with TcpProxy(port) as proxy:``; ``proxy.url`` is https://127.0.0.1:<port>."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.refusing = False
        self.accepted = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for link in list(self._links):
            link.close()
        self._links.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def blackhole(self) -> None:
        for link in self._links:
            link.blackholed = True

    def refuse(self) -> None:
        self.refusing = True
        for link in list(self._links):
            link.close()
        self._links.clear()

    def heal(self) -> None:
        self.refusing = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer)),
            asyncio.create_task(self._pump(link, up_reader, writer)),
        ]

    async def _pump(
        self, link: _Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await source.read(65536):
                if link.blackholed:
                    continue  # swallowed: the other side waits for bytes that never come
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if not link.blackholed:
                link.close()
                self._links.discard(link)
