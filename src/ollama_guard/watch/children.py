"""Follow logs that a command prints: ``journalctl -f -o json`` and ``docker logs -f -t``.

The command runs as a child process and is restarted (with back-off) when it exits, from where the
last one stopped so no line is lost or repeated: journalctl from the last record's ``__CURSOR``
(``--after-cursor``), docker from the last line's timestamp (``--since``, skipping lines not newer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ollama_guard.errors import GuardError, InputError
from ollama_guard.investigate.sources import journal_record_lines
from ollama_guard.watch.follow import Lines

READ_SIZE = 1 << 16
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
STABLE_AFTER = 10.0  # a child that ran this long resets the back-off

Sink = Callable[[list[str]], None]
Notice = Callable[[str], None]


class ChildFollower:
    """Common part: run, read stdout in chunks, restart. Subclasses build argv and turn output into lines."""

    name = "command"

    def __init__(self, exe: str) -> None:
        self.exe = exe
        self.starts = 0
        self._lines = Lines()
        self._proc: asyncio.subprocess.Process | None = None
        self._last = ""  # the last line the command printed (docker's complaints go to the same pipe)

    def argv(self, follow: bool) -> list[str]:
        raise NotImplementedError

    def lines(self, raw: list[str]) -> list[str]:
        return raw

    async def run(self, sink: Sink, notice: Notice, stop: asyncio.Event, *, follow: bool = True) -> None:
        backoff = BACKOFF_FIRST
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            argv = self.argv(follow)
            self.starts += 1
            started = loop.time()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE if self.separate_stderr else asyncio.subprocess.STDOUT,
                )
            except OSError as exc:
                if not follow:
                    raise GuardError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
                notice(f"cannot run {argv[0]}: {exc.strerror or exc}; retrying in {backoff:g}s")
            else:
                self._proc = proc
                code, err = await self._pump(proc, sink, stop)
                self._proc = None
                if stop.is_set():
                    return
                if not follow:
                    if code != 0:
                        raise GuardError(f"{self.name} failed: {err or f'exit status {code}'}")
                    return
                if loop.time() - started >= STABLE_AFTER:
                    backoff = BACKOFF_FIRST
                why = err or f"exit status {code}"
                notice(f"{self.name} stopped ({why}); restarting in {backoff:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    separate_stderr = True

    async def _pump(self, proc: asyncio.subprocess.Process, sink: Sink,
                    stop: asyncio.Event) -> tuple[int, str]:
        assert proc.stdout is not None
        err_task = asyncio.create_task(proc.stderr.read()) if proc.stderr is not None else None
        stopper = asyncio.create_task(stop.wait())
        try:
            while True:
                reader = asyncio.create_task(proc.stdout.read(READ_SIZE))
                done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if reader not in done:
                    reader.cancel()
                    await _terminate(proc)
                    return 0, ""
                data = reader.result()
                if not data:
                    break
                raw = self._lines.feed(data)
                if raw:
                    self._last = raw[-1]
                got = self.lines(raw)
                if got:
                    sink(got)
            rest = self.lines(self._lines.flush())
            if rest:
                sink(rest)
        finally:
            stopper.cancel()
        code = await proc.wait()
        err = ""
        if err_task is not None:
            text = (await err_task).decode("utf-8", "replace").strip()
            err = text.splitlines()[-1][:300] if text else ""
        elif code != 0:
            err = self._last.strip()[:300]
        return code, err

    async def stop(self) -> None:
        if self._proc is not None:
            await _terminate(self._proc)


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 3)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class JournalFollower(ChildFollower):
    """``journalctl -u UNIT -f -o json``: from now (or the whole journal with ``from_start``); after a
    restart from the last cursor, or from the first start's time if no record came yet."""

    def __init__(self, exe: str, unit: str, *, from_start: bool = False) -> None:
        super().__init__(exe)
        self.unit = unit
        self.name = f"journal:{unit}"
        self.from_start = from_start
        self.cursor: str | None = None
        self._first_start: float | None = None

    def argv(self, follow: bool) -> list[str]:
        argv = [self.exe, "-u", self.unit, "-o", "json", "--no-pager"]
        if follow:
            argv.append("-f")
        if self.cursor is not None:
            return [*argv, "--no-tail", "--after-cursor", self.cursor]
        if self._first_start is not None and not self.from_start:
            return [*argv, "--no-tail", "--since", f"@{int(self._first_start)}"]
        self._first_start = datetime.now(UTC).timestamp()
        if self.from_start or not follow:
            return [*argv, "--no-tail"] if follow else argv
        return [*argv, "-n", "0"]

    def lines(self, raw: list[str]) -> list[str]:
        out: list[str] = []
        for text in raw:
            if not text.strip():
                continue
            try:
                record: Any = json.loads(text)
            except ValueError:
                continue  # journalctl's own notices ("-- No entries --") are not records
            if not isinstance(record, dict):
                continue
            cursor = record.get("__CURSOR")
            if isinstance(cursor, str):
                self.cursor = cursor
            out.extend(journal_record_lines(record))
        return out


class DockerFollower(ChildFollower):
    """``docker logs -f -t CONTAINER`` (stdout and stderr: Ollama logs to stderr)."""

    separate_stderr = False

    def __init__(self, exe: str, container: str, *, from_start: bool = False) -> None:
        super().__init__(exe)
        self.container = container
        self.name = f"docker:{container}"
        self.from_start = from_start
        self.last: tuple[str, str] | None = None  # (seconds part, 9-digit fraction) of the last line
        self._since: str | None = None

    def argv(self, follow: bool) -> list[str]:
        argv = [self.exe, "logs", "-t"]
        if follow:
            argv.append("-f")
        if self._since is not None:
            argv += ["--since", self._since]
        elif follow and not self.from_start:
            argv += ["--tail", "0"]
        return [*argv, self.container]

    def lines(self, raw: list[str]) -> list[str]:
        out: list[str] = []
        for text in raw:
            stamp = _docker_stamp(text)
            if stamp is not None:
                if self.last is not None and stamp <= self.last:
                    continue  # already seen before the restart
                self.last = stamp
                self._since = text.split(" ", 1)[0]
            out.append(text)
        return out


def _docker_stamp(text: str) -> tuple[str, str] | None:
    head = text.split(" ", 1)[0]
    if len(head) < 20 or head[4] != "-" or head[10] != "T":
        return None
    seconds, _, frac = head[:19], None, ""
    rest = head[19:]
    if rest.startswith("."):
        digits = rest[1:].rstrip("Z").split("+")[0].split("-")[0]
        frac = digits
    return seconds, frac.ljust(9, "0")


def journal_follower(unit: str, from_start: bool) -> JournalFollower:
    exe = shutil.which("journalctl")
    if exe is None:
        raise GuardError("--journal needs journalctl, which is not installed here")
    if not unit or unit.startswith("-"):
        raise InputError(f"bad --journal unit {unit!r}")
    return JournalFollower(exe, unit, from_start=from_start)


def docker_follower(container: str, from_start: bool) -> DockerFollower:
    exe = shutil.which("docker")
    if exe is None:
        raise GuardError("--docker needs the docker command, which is not installed here")
    if not container or container.startswith("-"):
        raise InputError(f"bad container name {container!r}")
    return DockerFollower(exe, container, from_start=from_start)
