"""The watch on one event loop: a task per source feeding the pipeline, a sender task per network
destination, a ticker that releases held alert updates, and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollama_guard.watch.auditdb import AuditFollower
from ollama_guard.watch.children import ChildFollower
from ollama_guard.watch.destinations import Destination
from ollama_guard.watch.follow import DATA, FileFollower, Lines
from ollama_guard.watch.pipeline import Pipeline

POLL = 0.1  # seconds between looks at each followed file
TICK = 0.5  # seconds between checks for held alert updates
DRAIN = 5.0  # seconds given to network destinations to send what is queued at exit


def notice(message: str) -> None:
    sys.stderr.write(f"ollama-guard watch: {message}\n")
    sys.stderr.flush()


@dataclass
class Watch:
    pipeline: Pipeline
    files: list[tuple[str, FileFollower]] = field(default_factory=list)
    children: list[ChildFollower] = field(default_factory=list)
    audit: AuditFollower | None = None
    destinations: list[Destination] = field(default_factory=list)
    responders: list[Any] = field(default_factory=list)  # async callables taking an alert, with close()
    poll: float = POLL

    def dispatch(self, alert: dict[str, Any]) -> None:
        for dest in self.destinations:
            dest.submit(alert)
        for respond in self.responders:
            task = asyncio.get_running_loop().create_task(respond(alert))
            self._responses.add(task)
            task.add_done_callback(self._responses.discard)

    def __post_init__(self) -> None:
        self._responses: set[asyncio.Task[None]] = set()
        self.pipeline.on_alert = self.dispatch

    # --- one pass (--once) ---------------------------------------------------------------------------

    async def once(self) -> None:
        stop = asyncio.Event()
        senders = [asyncio.create_task(d.run(notice)) for d in self.destinations]
        try:
            for name, follower in self.files:
                lines = Lines()
                for kind, data in follower.read_all():
                    if kind == DATA:
                        self.pipeline.block(name, lines.feed_bytes(data))
                self.pipeline.lines(name, lines.flush())
                follower.close()
                _notices(follower)
            for child in self.children:
                await child.run(lambda got, c=child: self.pipeline.lines(c.name, got), notice, stop,
                                follow=False)
            if self.audit is not None:
                await self.audit.run(self.pipeline.events, notice, stop, follow=False)
            self.pipeline.flush()
            await self._finish(senders)
        finally:
            for task in senders:
                task.cancel()

    # --- following --------------------------------------------------------------------------------

    async def follow(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        senders = [asyncio.create_task(d.run(notice)) for d in self.destinations]
        sources = [asyncio.create_task(self._follow_file(name, f, stop)) for name, f in self.files]
        sources += [
            asyncio.create_task(c.run(lambda got, c=c: self.pipeline.lines(c.name, got), notice, stop))
            for c in self.children
        ]
        if self.audit is not None:
            sources.append(asyncio.create_task(self.audit.run(self.pipeline.events, notice, stop)))
        ticker = asyncio.create_task(self._tick(stop))
        await asyncio.sleep(0)
        notice(f"following {len(sources)} source(s); alerts to "
               f"{', '.join(d.label for d in self.destinations) or 'nowhere'}")
        try:
            done, _ = await asyncio.wait([*sources, asyncio.create_task(stop.wait())],
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:  # a source that failed for good (not a stop) ends the watch with its error
                if task in sources and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            stop.set()
            for child in self.children:
                await child.stop()
            await asyncio.gather(*sources, return_exceptions=True)
            ticker.cancel()
            for _, follower in self.files:
                follower.close()
            self.pipeline.flush()
            await self._finish(senders)
            for task in senders:
                task.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _finish(self, senders: list[asyncio.Task[None]]) -> None:
        if self._responses:
            await asyncio.wait(list(self._responses), timeout=DRAIN)
        await asyncio.gather(*(d.drain(DRAIN) for d in self.destinations))
        for dest in self.destinations:
            await dest.close()
        for responder in self.responders:
            await responder.close()

    async def _follow_file(self, name: str, follower: FileFollower, stop: asyncio.Event) -> None:
        lines = Lines()
        pipeline = self.pipeline
        while not stop.is_set():
            items, more = follower.poll()
            if follower.skipped_lines:
                pipeline.skip(name, follower.skipped_lines)
                follower.skipped_lines = 0
            for kind, data in items:
                if kind == DATA:
                    pipeline.block(name, lines.feed_bytes(data))
                else:
                    pipeline.lines(name, lines.flush())
                    pipeline.reset(name)
            _notices(follower)
            if more:
                await asyncio.sleep(0)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll)

    async def _tick(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK)
            self.pipeline.flush()


def _notices(follower: FileFollower) -> None:
    for message in follower.notices:
        notice(message)
    follower.notices.clear()


def source_name(path: Path, others: list[Path]) -> str:
    """The file's name, or its whole path when two followed files share a name."""
    same = sum(1 for p in others if p.name == path.name)
    return path.name if same <= 1 and path.name else str(path)
