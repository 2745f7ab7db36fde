"""The scan loop: TCP connect to every address:port, then HTTP assessment of the open ones.

Connect phase: one dispatcher walks the lazy target iterator (a /16 is never a list) and starts a raw
non-blocking connect per address:port. When the kernel settles it at once (loopback and on-link refusals
usually are), no event-loop machinery is involved at all, and on Linux the refused socket is reused for
the next address; otherwise the socket waits for writability with a plain callback and one timer — no
task, no transport per address. `concurrency` bounds the connects in flight, a token bucket paces them
(`rate`, connections per second), a per-host cap bounds each address.
The dispatcher yields to the event loop every couple of milliseconds, so assessments of ports found open
run while the connect phase continues; results reach the caller as each host finishes.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import resource
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from ollama_guard.scan.defaults import DEFAULT_CONCURRENCY, DEFAULT_PER_HOST, DEFAULT_TIMEOUT
from ollama_guard.scan.findings import build_findings
from ollama_guard.scan.host import HostResult
from ollama_guard.scan.probes import Assessor, HttpProber, ProbeSettings
from ollama_guard.scan.targets import Exclusions, Target

_FD_RESERVE = 128  # descriptors kept free for the HTTP phase, files, the terminal
# The C socket type, created non-blocking in one syscall: the Python wrapper class and a separate
# setblocking() cost more than the connect itself on loopback.
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _raw_socket(family: int) -> _socket.socket:
    sock = _socket.socket(family, socket.SOCK_STREAM | _NONBLOCK)
    if not _NONBLOCK:
        sock.setblocking(False)
    return sock


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (a connect scan needs one descriptor per attempt)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    with suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    return soft


@dataclass(frozen=True, slots=True)
class ScanSettings:
    concurrency: int = DEFAULT_CONCURRENCY  # simultaneous TCP connects
    rate: float = 0.0  # connections per second; 0 = unlimited
    timeout: float = DEFAULT_TIMEOUT  # connect, and each HTTP probe
    per_host: int = DEFAULT_PER_HOST  # simultaneous connections to one address
    max_body: int = 256 * 1024  # bytes kept per probe
    assess_concurrency: int = 64  # hosts assessed at once
    host_budget: float = 0.0  # whole assessment of one port (0: 4 × timeout)


@dataclass(slots=True)
class ScanStats:
    attempted: int = 0  # connects finished (open, closed or timed out)
    open: int = 0
    assessed: int = 0
    services: int = 0
    excluded: int = 0
    unresolved: list[str] = field(default_factory=list)
    interrupted: bool = False


class TokenBucket:
    """`rate` tokens per second with a burst of `burst`; `take()` waits for a token."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._next = 0.0  # loop time at which the next token is free

    async def take(self) -> None:
        if self.rate <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest = now - self.burst / self.rate
        slot = max(self._next, earliest)
        self._next = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)


# connect_ex results that settle a connect at once (anything else: in progress, or an odd error)
_REFUSED = errno.ECONNREFUSED
_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK)
# Linux lets a TCP socket whose connect was refused connect again: the first call after the refusal returns
# ECONNABORTED (it resets the socket) and the next one is a normal connect. Reusing the socket saves the
# socket() and close() of every refused attempt, a third of the kernel time of a connect scan.
_REUSE_SOCKETS = sys.platform.startswith("linux")


def _connect_now(sock: _socket.socket, address: tuple[str, int], reused: bool) -> tuple[bool | None, int]:
    """Start a non-blocking connect and settle it without the event loop when the kernel already knows:
    on loopback and on-link networks the refusal (or the handshake) is usually complete by the time
    connect() returns EINPROGRESS. Returns (open?, errno): open? is None while still in progress."""
    err = sock.connect_ex(address)
    if reused and err == errno.ECONNABORTED:
        err = sock.connect_ex(address)
    if err == 0:
        return True, 0
    if err not in _IN_PROGRESS:
        return False, err
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        return False, err
    try:
        sock.getpeername()
    except OSError:
        return None, 0
    return True, 0


class Scanner:
    """One scan. Iterate `results()` for HostResults (every open port, identified or not)."""

    SLICE_SECONDS = 0.002  # longest stretch the dispatcher runs without letting assessments progress
    RESOLVERS = 32  # host names resolved at once

    def __init__(
        self,
        targets: Iterable[Target],
        settings: ScanSettings | None = None,
        exclusions: Exclusions | None = None,
        on_attempt: Callable[[], None] | None = None,
    ) -> None:
        self.targets = targets
        self.settings = settings or ScanSettings()
        self.exclusions = exclusions or Exclusions()
        self.stats = ScanStats()
        self._on_attempt = on_attempt
        self._bucket = TokenBucket(self.settings.rate)
        self._limit = 1
        self._inflight = 0
        self._host_inflight: dict[str, int] = {}
        self._pending: dict[int, tuple[_socket.socket, Target, asyncio.TimerHandle]] = {}
        self._spare: dict[int, _socket.socket] = {}  # a refused socket per family, ready for reuse
        self._slot_freed = asyncio.Event()
        self._seen_open: set[tuple[str, int, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolvers = asyncio.Semaphore(self.RESOLVERS)
        self._queue: asyncio.Queue[HostResult | None] = asyncio.Queue()
        self._assess_slots = asyncio.Semaphore(self.settings.assess_concurrency)
        self._assessor: Assessor | None = None
        self._failure: BaseException | None = None

    # ---------------------------------------------------------------------------------- connect phase

    def _has_room(self, host: str) -> bool:
        return self._inflight < self._limit and self._host_inflight.get(host, 0) < self.settings.per_host

    async def _launch(self, target: Target) -> None:
        """Start one connect, waiting first for the rate, a free slot and room on the host."""
        if self.exclusions and self.exclusions.excludes_address(target.host):
            self.stats.excluded += 1
            return
        if self._bucket.rate > 0:
            await self._bucket.take()
        while not self._has_room(target.host):
            self._slot_freed.clear()
            await self._slot_freed.wait()
        while not self._start_connect(target):  # noqa: ASYNC110 - no event tells us a descriptor closed
            # out of descriptors: let in-flight connects and assessments finish
            await asyncio.sleep(0.05)

    def _start_connect(self, target: Target) -> bool:
        """False only when no socket could be created (descriptor exhaustion)."""
        family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
        address = (target.host, target.port)
        sock = self._spare.pop(family, None)
        state: bool | None = False
        err = 0
        if sock is not None:
            try:
                state, err = _connect_now(sock, address, True)
            except OSError:
                state, err = False, -1
            if state is False and err != _REFUSED:  # odd answer on a reused socket: redo it afresh
                sock.close()
                sock = None
        if sock is None:
            try:
                sock = _raw_socket(family)
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    return False
                raise
            try:
                state, err = _connect_now(sock, address, False)
            except OSError:
                state, err = False, -1
        if state is not None:
            if state is False and err == _REFUSED and _REUSE_SOCKETS:
                self._spare[family] = sock
            else:
                sock.close()
            if state:
                self._attempted(target, True)
            else:  # the common case of a scan, kept short
                self.stats.attempted += 1
                if self._on_attempt is not None:
                    self._on_attempt()
            return True
        loop = asyncio.get_running_loop()
        fd = sock.fileno()
        timer = loop.call_later(self.settings.timeout, self._connect_settled, fd, False)
        self._pending[fd] = (sock, target, timer)
        loop.add_writer(fd, self._connect_settled, fd, True)
        self._inflight += 1
        self._host_inflight[target.host] = self._host_inflight.get(target.host, 0) + 1
        return True

    def _connect_settled(self, fd: int, writable: bool) -> None:
        entry = self._pending.pop(fd, None)
        if entry is None:
            return
        sock, target, timer = entry
        asyncio.get_running_loop().remove_writer(fd)
        timer.cancel()
        try:
            is_open = writable and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        except OSError:
            is_open = False
        sock.close()
        self._inflight -= 1
        remaining = self._host_inflight.get(target.host, 1) - 1
        if remaining > 0:
            self._host_inflight[target.host] = remaining
        else:
            self._host_inflight.pop(target.host, None)
        self._slot_freed.set()
        self._attempted(target, is_open)

    def _attempted(self, target: Target, is_open: bool) -> None:
        self.stats.attempted += 1
        if self._on_attempt is not None:
            self._on_attempt()
        if not is_open:
            return
        key = (target.host, target.port, target.base_path)
        if key in self._seen_open:
            return
        self._seen_open.add(key)
        self.stats.open += 1
        result = HostResult(target=target, discovered_at=asyncio.get_running_loop().time())
        self._spawn(self._assess(result))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _abandon_connects(self) -> None:
        loop = asyncio.get_running_loop()
        for fd, (sock, _target, timer) in list(self._pending.items()):
            loop.remove_writer(fd)
            timer.cancel()
            sock.close()
        self._pending.clear()
        self._inflight = 0
        for spare in self._spare.values():
            spare.close()
        self._spare.clear()

    async def _resolve(self, target: Target) -> list[Target]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.settings.timeout * 2):
                infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            self.stats.unresolved.append(target.host)
            return []
        addresses: dict[str, None] = {}
        for info in infos:
            address = str(info[4][0])
            if "%" not in address:
                addresses.setdefault(address, None)
        return [target.resolved(a) for a in addresses]

    async def _resolve_and_launch(self, target: Target) -> None:
        async with self._resolvers:
            resolved = await self._resolve(target)
        for each in resolved:
            await self._launch(each)

    async def _dispatch(self) -> None:
        clock = time.perf_counter
        slice_end = clock() + self.SLICE_SECONDS
        fast = self._bucket.rate <= 0 and not self.exclusions  # no pacing, nothing to skip
        for target in self.targets:
            if target.is_name:
                if self.exclusions and self.exclusions.excludes_name(target.host):
                    self.stats.excluded += 1
                else:
                    self._spawn(self._resolve_and_launch(target))
            elif not (fast and self._has_room(target.host) and self._start_connect(target)):
                await self._launch(target)
            if clock() > slice_end:
                await asyncio.sleep(0)  # let open ports' assessments and settled connects run
                slice_end = time.perf_counter() + self.SLICE_SECONDS

    # ------------------------------------------------------------------------------- assessment phase

    async def _assess(self, result: HostResult) -> None:
        try:
            async with self._assess_slots:
                assert self._assessor is not None
                await self._assessor.assess(result)
                result.findings = build_findings(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one host's surprise must not end the scan
            result.note = f"assessment failed: {type(exc).__name__}: {exc}"
        result.finished_at = asyncio.get_running_loop().time()
        self.stats.assessed += 1
        if result.service is not None:
            self.stats.services += 1
        self._queue.put_nowait(result)

    async def _run(self) -> None:
        try:
            self._limit = self._connect_limit()
            await self._dispatch()
            while self._tasks or self._inflight:
                if self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
                else:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failure = exc
        finally:
            self._abandon_connects()
            self._queue.put_nowait(None)

    def _connect_limit(self) -> int:
        limit = raise_fd_limit()
        usable = max(1, limit - _FD_RESERVE - self.settings.assess_concurrency * self.settings.per_host)
        return max(1, min(self.settings.concurrency, usable))

    async def results(self) -> AsyncIterator[HostResult]:
        """Yield each open port's HostResult as soon as its assessment ends."""
        probe_settings = ProbeSettings(
            timeout=self.settings.timeout,
            max_body=self.settings.max_body,
            per_host=self.settings.per_host,
            host_budget=self.settings.host_budget,
        )
        connection_limit = self.settings.assess_concurrency * self.settings.per_host
        async with HttpProber(probe_settings, connection_limit) as prober:
            self._assessor = Assessor(prober)
            runner = asyncio.create_task(self._run())
            try:
                while True:
                    item = await self._queue.get()
                    if item is None:
                        break
                    yield item
                if self._failure is not None:
                    raise self._failure
            finally:
                if not runner.done():
                    runner.cancel()
                for task in list(self._tasks):
                    task.cancel()
                pending = [runner, *self._tasks]
                with suppress(BaseException):
                    await asyncio.gather(*pending, return_exceptions=True)
                if self._pending:
                    self._abandon_connects()
