"""The server's own speed-ups in `relayer.faces.api.edge`: the coalescing transport (the writes of one loop
turn leave as one; nothing held is lost on close, nothing sent after an abort) and the garbage collector's
freeze while serving. Over a real socket pair, read from the other end."""

from __future__ import annotations

import asyncio
import gc
import socket

from relayer.faces.api.edge import CoalescingTransport, frozen_after_startup


async def _pair() -> tuple[CoalescingTransport, socket.socket, list[int]]:
    """A coalescing transport over one end of a socket pair; the other end; the sizes the kernel got."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    assert isinstance(transport, asyncio.Transport)
    sent: list[int] = []
    real_write = transport.write

    def counting(data: bytes | bytearray | memoryview) -> None:
        sent.append(len(data))
        real_write(data)

    transport.write = counting  # type: ignore[method-assign]
    theirs.setblocking(False)
    return CoalescingTransport(transport, loop), theirs, sent


def _read(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_writes_of_one_turn_leave_together_in_order() -> None:
    async def run() -> tuple[list[int], bytes]:
        transport, theirs, sent = await _pair()
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"")
        transport.write(b"ok")
        assert sent == []  # held until the loop turns
        assert transport.get_write_buffer_size() == 40
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        received = _read(theirs)
        transport.close()
        theirs.close()
        return sent, received

    sent, received = asyncio.run(run())
    assert sent == [40]
    assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def test_close_sends_what_is_held_and_abort_drops_it() -> None:
    async def run() -> tuple[bytes, bytes]:
        closing, theirs, _ = await _pair()
        closing.write(b"last words")
        closing.close()
        aborting, other, _ = await _pair()
        aborting.write(b"never sent")
        aborting.abort()
        await asyncio.sleep(0.01)
        got = _read(theirs), _read(other)
        theirs.close()
        other.close()
        return got

    closed, aborted = asyncio.run(run())
    assert closed == b"last words"
    assert aborted == b""


def test_what_is_alive_at_startup_is_frozen_while_serving() -> None:
    async def run() -> tuple[int, int]:
        async with frozen_after_startup(None):
            inside = gc.get_freeze_count()
        return inside, gc.get_freeze_count()

    inside, after = asyncio.run(run())
    assert inside > 1000  # the modules, functions and classes imported so far
    assert after == 0
