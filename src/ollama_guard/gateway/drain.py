"""The last holder of the listening socket answers what is queued on it before closing it.

The kernel completes TCP handshakes for a listening socket on its own and queues the connections until
someone accepts them; closing the socket then resets every connection still queued — clients whose
request may already be sent and who cannot tell whether it ran. uvicorn stops accepting when its
graceful shutdown starts, but the socket itself stays open (the `--workers` supervisor holds it, and in
one process `serve` does) until the workers have finished the requests in flight, up to
`timeout_graceful_shutdown` seconds: everything that connects meanwhile queues, and is reset at the
end (measured: 20 of 20 connections made while a slow answer held the workers).

`ListenerDrain` takes the socket over from the moment the server stops accepting on it: it accepts in
a thread of its own and answers each connection with a clean `503` (`Connection: close`,
`Retry-After`, an error body in the dialect of the path), reading the request head first and the
rest until the client closes (bounded), so a body left unread cannot turn the close into a reset.
`finish()` makes the kernel drop new handshakes on the socket (a drop-everything socket filter: late
clients retry their SYN and meet a closed port — "connection refused", nothing sent), accepts what
is still queued, answers it, and only then closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import socket
import ssl
import struct
import threading

from ollama_guard.gateway.respond import JSON, error_body

log = logging.getLogger("ollama_guard.gateway")

HEAD_TIMEOUT = 2.0  # seconds a queued client gets to send its request head
LINGER = 1.0  # seconds we keep reading what a client still sends after our answer
MAX_HEAD = 64 * 1024
RETRY_AFTER = 1
MESSAGE = "the gateway is shutting down; retry"
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)


def refuse_new_connections(sock: socket.socket) -> bool:
    """Attach a one-instruction classic BPF program (`ret #0`) to a listening socket: the kernel drops
    every packet addressed to it, so no new handshake completes and nothing more joins the accept
    queue. Connections already queued are unaffected. False where this is not possible (not Linux)."""
    drop_all = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET | BPF_K, 0
    program = struct.pack("@HP", 1, ctypes.addressof(drop_all))  # struct sock_fprog {len, filter}
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
    except OSError:
        return False
    return True


def shutdown_answer(head: bytes) -> bytes:
    """The whole 503 response to a request head (the body speaks the dialect of its path)."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace").split(" ")
    method = line[0] if line else ""
    path = line[1].split("?", 1)[0] if len(line) > 1 else ""
    body = error_body(MESSAGE, path, 503, "shutting-down")
    head_lines = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: " + JSON
        + b"\r\ncontent-length: %d\r\nretry-after: %d\r\nconnection: close\r\n\r\n" % (len(body), RETRY_AFTER)
    )
    return head_lines if method == "HEAD" else head_lines + body


class ListenerDrain:
    """Answers `503` on a listening socket nobody else accepts on any more, then closes it."""

    def __init__(self, sock: socket.socket, ssl_context: ssl.SSLContext | None = None) -> None:
        self._sock = sock
        self._ssl = ssl_context
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finishing: asyncio.Event | None = None
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._finished = False
        self.answered = 0
        self.accepted = 0

    def start(self) -> None:
        """Begin accepting and answering (in a thread of its own; idempotent)."""
        self._spawn(accepting=True)

    def _spawn(self, *, accepting: bool) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._main, args=(accepting,), name="ollama-guard drain", daemon=True
            )
            self._thread.start()
        self._started.wait(5)

    def finish(self, timeout: float = HEAD_TIMEOUT + LINGER + 2.0) -> None:
        """Stop new handshakes, answer every queued connection, close the socket (idempotent; without
        `start()` before, this is all it does)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self._spawn(accepting=False)
        loop, finishing, thread = self._loop, self._finishing, self._thread
        if loop is not None and finishing is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(finishing.set)
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            if not self._closed:  # the thread could not start or did not end in time
                self._closed = True
                self._sock.close()
        if self.accepted:
            log.warning("answered %d connection(s) that arrived during shutdown with 503 (%d complete)",
                        self.accepted, self.answered)

    # --- in the drain thread ----------------------------------------------------------------------
    def _main(self, accepting: bool) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run(loop, accepting))
        except Exception:  # the socket is closed below whatever happened here
            log.exception("answering connections during shutdown failed")
        finally:
            with self._lock:
                if not self._closed:
                    self._closed = True
                    self._sock.close()
            loop.close()

    async def _run(self, loop: asyncio.AbstractEventLoop, accepting: bool) -> None:
        self._loop, self._finishing = loop, asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        self._sock.setblocking(False)
        self._started.set()
        if accepting:  # until finish(): answer connections as they come
            fd = self._sock.fileno()
            loop.add_reader(fd, self._accept_all, loop, tasks)
            await self._finishing.wait()
            loop.remove_reader(fd)
        refuse_new_connections(self._sock)
        self._accept_all(loop, tasks)  # what the kernel still holds for us
        with self._lock:
            self._closed = True
            self._sock.close()
        if tasks:
            await asyncio.wait(tasks, timeout=HEAD_TIMEOUT + LINGER + 1.0)

    def _accept_all(self, loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[None]]) -> None:
        while True:
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, …: what stays queued is reset at the close
                log.error("cannot accept a connection during shutdown: %s", exc.strerror or exc)
                return
            self.accepted += 1
            task = loop.create_task(self._answer(loop, conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _answer(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        conn.setblocking(False)
        reader = asyncio.StreamReader(limit=MAX_HEAD)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol, conn, ssl=self._ssl,
                    ssl_handshake_timeout=HEAD_TIMEOUT if self._ssl else None,
                )
        except (OSError, TimeoutError, ssl.SSLError):
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.write(shutdown_answer(head))
            await writer.drain()
            self.answered += 1
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(LINGER):  # read on until the client closes (Connection: close)
                while await reader.read(65536):
                    pass
        except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
