"""Where log lines come from: files (plain or gzip-rotated), stdin, journald, ``docker logs``, and
the gateway's audit table. Every text source is read as a stream of byte chunks that end on a line
boundary, so memory stays bounded whatever the size of the log."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ollama_guard.errors import GuardError, InputError
from ollama_guard.investigate.custody import Digest, HashingReader
from ollama_guard.investigate.events import REQUEST, Event

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ollama_guard.gateway.audit import AuditRecord

CHUNK_SIZE = 8 << 20
_SLOG_OFFSET = re.compile(r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|([+-])(\d\d):?(\d\d))")
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class TextSource:
    """A stream of log lines. ``path`` is set for plain files (which may be split across processes)."""

    name: str
    path: Path | None = None
    gzipped: bool = False
    argv: list[str] | None = None  # a command whose output is the log
    journal: bool = False  # argv prints journald JSON
    stdin: bool = False
    # SHA-256 and size of the bytes read (chain of custody): set by chunks(), or by the fast path
    digest: Digest | None = None

    @property
    def kind(self) -> str:
        if self.stdin:
            return "stdin"
        if self.argv is not None:
            return "journal" if self.journal else "docker"
        return "gzip" if self.gzipped else "file"

    def zone_hint(self) -> tzinfo | None:
        """The UTC offset of the first slog line (``time=…+08:00``) in the first 256 KiB of a file: the
        server's zone, which its gin lines (local time, no zone) share — also those before that line."""
        head = self._head()
        m = _SLOG_OFFSET.search(head)
        if m is None:
            return None
        if m.group(1) is None:  # "Z"
            return UTC
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return timezone(-delta if m.group(1) == "-" else delta)

    def _head(self, size: int = 256 << 10) -> str:
        if self.path is None:
            return ""
        try:
            if self.gzipped:
                import gzip

                with gzip.open(self.path, "rb") as zfh:
                    return zfh.read(size).decode("utf-8", "replace")
            with open(self.path, "rb") as fh:
                return fh.read(size).decode("utf-8", "replace")
        except (OSError, EOFError):
            return ""

    def chunks(self, size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The source's lines in chunks; every byte read is hashed into ``digest`` on the way (the
        command's raw output, a gzip file's compressed bytes)."""
        digest = self.digest = Digest()
        if self.stdin:
            yield from iter_line_chunks(HashingReader(sys.stdin.buffer, digest), size)  # type: ignore[arg-type]
        elif self.argv is not None:
            yield from self._command_chunks(size, digest)
        elif self.gzipped:
            assert self.path is not None
            import gzip  # imported where needed: start-up time of the common plain-file run

            try:
                with open(self.path, "rb") as raw:
                    hashed = HashingReader(raw, digest)  # type: ignore[arg-type]
                    with gzip.GzipFile(fileobj=hashed, mode="rb") as fh:  # type: ignore[arg-type]
                        yield from iter_line_chunks(fh, size)  # type: ignore[arg-type]
                    hashed.drain()
            except (OSError, EOFError) as exc:
                raise InputError(f"cannot read {self.path}: {exc}") from None
        else:
            assert self.path is not None
            try:
                with open(self.path, "rb") as fh:
                    yield from iter_line_chunks(HashingReader(fh, digest), size)  # type: ignore[arg-type]
            except OSError as exc:
                raise InputError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        digest.complete = True

    def _command_chunks(self, size: int, digest: Digest) -> Iterator[bytes]:
        assert self.argv is not None
        import subprocess

        try:
            proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if not self.journal else subprocess.PIPE,
            )
        except OSError as exc:
            raise GuardError(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
        assert proc.stdout is not None
        tail = b""
        try:
            stream = iter_line_chunks(HashingReader(proc.stdout, digest), size)  # type: ignore[arg-type]
            if self.journal:
                stream = journal_json_to_lines(stream)
            for chunk in stream:
                tail = chunk[-400:]
                yield chunk
        finally:
            proc.stdout.close()
            err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
            code = proc.wait()
        if code != 0:
            # the command's own complaint: its stderr, or (docker, whose stderr we read as log) its last line
            last = err or tail.decode("utf-8", "replace").strip()
            detail = last.splitlines()[-1] if last else f"exit status {code}"
            name = Path(self.argv[0]).name
            raise GuardError(f"{name} {self.argv[1]} failed: {detail}")


def iter_line_chunks(stream: BinaryIO, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Chunks of about ``size`` bytes that end just after a newline (the last one may not)."""
    rest = b""
    while True:
        block = stream.read(size)
        if not block:
            if rest:
                yield rest
            return
        if rest:
            block = rest + block
        cut = block.rfind(b"\n")
        if cut < 0:
            rest = block
            continue
        if cut + 1 == len(block):
            rest = b""
            yield block
        else:
            rest = block[cut + 1 :]
            yield block[: cut + 1]


def journal_json_to_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``journalctl -o json`` records → ``<RFC 3339 UTC time> MESSAGE`` lines (same shape as
    ``docker logs -t``), using ``__REALTIME_TIMESTAMP`` (µs since the epoch)."""
    for chunk in chunks:
        out: list[bytes] = []
        for raw in chunk.splitlines():
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                out.append(raw)
                continue
            out.extend(part.encode("utf-8", "replace") for part in journal_record_lines(record))
        if out:
            yield b"\n".join(out) + b"\n"


def journal_record_lines(record: dict[str, Any]) -> list[str]:
    """One journald JSON record → its message line(s), each prefixed with the record's UTC time."""
    message = record.get("MESSAGE", "")
    if isinstance(message, list):  # journald's encoding of non-UTF-8 messages
        message = bytes(b & 0xFF for b in message if isinstance(b, int)).decode("utf-8", "replace")
    elif not isinstance(message, str):
        message = str(message)
    stamp = ""
    try:
        micros = int(record.get("__REALTIME_TIMESTAMP", ""))
        t = datetime.fromtimestamp(micros / 1e6, UTC)
        stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ ")
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    return [stamp + part for part in message.split("\n")]


def file_source(arg: str) -> TextSource:
    if arg == "-":
        return TextSource("stdin", stdin=True)
    path = Path(arg)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except IsADirectoryError:
        raise InputError(f"{arg} is a directory (give the log files inside it)") from None
    except OSError as exc:
        raise InputError(f"cannot read {arg}: {exc.strerror or exc}") from None
    return TextSource(path.name if path.name else arg, path=path, gzipped=magic == GZIP_MAGIC)


def journal_source(since: datetime | None) -> TextSource:
    import shutil

    exe = shutil.which("journalctl")
    if exe is None:
        raise GuardError("--journal needs journalctl, which is not installed here")
    argv = [exe, "-u", "ollama", "-o", "json", "--no-pager"]
    if since is not None:
        argv += ["--since", since.astimezone().strftime("%Y-%m-%d %H:%M:%S")]
    return TextSource("journal:ollama", argv=argv, journal=True)


def docker_source(container: str) -> TextSource:
    import shutil

    exe = shutil.which("docker")
    if exe is None:
        raise GuardError("--docker needs the docker command, which is not installed here")
    if not container or container.startswith("-"):
        raise InputError(f"bad container name {container!r}")
    return TextSource(f"docker:{container}", argv=[exe, "logs", "-t", container])


def sort_by_first_time(sources: list[TextSource]) -> list[TextSource]:
    """Order log files oldest first (rotated ``server-1.log``/``.gz`` before the current one) by the
    first timestamp in each; sources without one keep their place at the end."""
    from ollama_guard.ollama import logformat as lf

    def first_time(src: TextSource) -> str:
        if src.path is None:
            return "~"
        try:
            if src.gzipped:
                import gzip

                with gzip.open(src.path, "rb") as zfh:
                    head = zfh.read(256 << 10)
            else:
                with open(src.path, "rb") as fh:
                    head = fh.read(256 << 10)
        except (OSError, EOFError):
            return "~"
        for raw in head.decode("utf-8", "replace").splitlines():
            msg, _ = lf.split_prefix(lf.strip_ansi(raw))
            gin = lf.parse_gin(msg) if lf.GIN_MARKER in msg else None
            if gin is not None:
                return gin.time.strftime("%Y-%m-%dT%H:%M:%S")
            if msg.startswith("time="):
                t = lf.parse_rfc3339(msg[5:].split(" ", 1)[0])
                if t is not None:
                    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return "~"

    files = [s for s in sources if s.path is not None]
    others = [s for s in sources if s.path is None]
    return sorted(files, key=first_time) + others


_AGGREGATE_EXPANSION = 1000


def audit_events(url: str, since: datetime | None, page: int = 5000) -> Iterator[Event]:
    """Rows of the gateway's audit table as request events (oldest first, read page by page)."""
    import asyncio

    from ollama_guard.gateway.audit import read_records
    from ollama_guard.gateway.db import create_engine_for

    if url.startswith("sqlite:///"):
        db_path = Path(url[len("sqlite:///") :]).expanduser()
        if not db_path.is_file():
            raise InputError(f"audit database {db_path} does not exist")

    async def fetch(engine: AsyncEngine, after: int | None) -> list[AuditRecord]:
        return await read_records(engine, after_id=after, since=since, limit=page)

    engine = create_engine_for(url)
    loop = asyncio.new_event_loop()
    try:
        after: int | None = None  # ids start below 0 for an older release's migrated records
        while True:
            try:
                records = loop.run_until_complete(fetch(engine, after))
            except Exception as exc:  # database errors of any driver
                raise GuardError(f"cannot read the audit log: {str(exc).splitlines()[0][:200]}") from None
            for rec in records:
                after = rec.id if rec.id is not None else after
                event = audit_event(rec)
                # an aggregated row (repeated refusals of one client for one reason in one interval)
                # stands for `count` requests; rules count them as such (bounded per row)
                for _ in range(min(max(1, rec.count), _AGGREGATE_EXPANSION)):
                    yield event
            if len(records) < page:
                break
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()


def audit_event(rec: AuditRecord) -> Event:
    t = rec.time if rec.time.tzinfo is not None else rec.time.replace(tzinfo=UTC)
    path, _, query = (rec.path or "").partition("?")
    status = int(rec.status or 0)
    raw = (
        f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')} {rec.decision} {status} {rec.client} {rec.method} {rec.path}"
        f" model={rec.model or '-'} key={rec.key_name or rec.key_id or '-'} reason={rec.reason!r}"
    )
    return Event(REQUEST, t, "audit-db", int(rec.id or 0), raw, client=rec.client or "",
                 method=rec.method or "", path=path, query=query, status=status,
                 latency=float(rec.latency_ms or 0) / 1000.0, model=rec.model or "",
                 key_id=rec.key_id or "", decision=rec.decision or "")

