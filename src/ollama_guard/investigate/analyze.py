"""Runs sources → (fast scanner) → parser → rule engine, in order, with bounded memory.

Plain files of some size are cut into pieces at line boundaries and scanned by worker processes
(fork); results come back in file order with a bounded number in flight.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from ollama_guard.investigate import fastscan
from ollama_guard.investigate.custody import Digest, FileHasher, custody_record, file_state
from ollama_guard.investigate.engine import Engine
from ollama_guard.investigate.events import REQUEST, ClientClassifier, Event
from ollama_guard.investigate.parse import LineParser, ParseStats
from ollama_guard.investigate.rules import Rule
from ollama_guard.investigate.sources import TextSource, audit_events

if TYPE_CHECKING:
    import multiprocessing.pool

# The owner's traffic (loopback, --trusted) on these endpoints is counted in bulk when no rule can match it.
FAST_ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("GET", "/"),
    ("HEAD", "/"),
    ("GET", "/api/version"),
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
    ("POST", "/api/show"),
    ("POST", "/api/generate"),
    ("POST", "/api/chat"),
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
)
PIECE_SIZE = 32 << 20
PARALLEL_MIN_SIZE = 96 << 20
IN_FLIGHT = 4


@dataclass
class Analysis:
    engine: Engine
    stats: dict[str, ParseStats] = field(default_factory=dict)
    tz: tzinfo | None = None
    fast: bool = False
    workers: int = 1
    custody: list[dict[str, Any]] = field(default_factory=list)  # one record per source, in order


def quiet_predicate(
    rules: tuple[Rule, ...], classifier: ClientClassifier
) -> Callable[[str, str, str, int], bool]:
    """Whether a request (client, method, path, status) can match no rule — then it only needs counting."""

    def is_quiet(client: str, method: str, path: str, status: int) -> bool:
        event = Event(REQUEST, None, "", 0, "", client=client, method=method, path=path, status=status)
        cls = classifier.classify(client)
        for rule in rules:
            if rule.select.matches(event, cls):
                return False
            if rule.preceded_by is not None and rule.preceded_by.select.matches(event, cls):
                return False
        return True

    return is_quiet


def analyze(
    sources: list[TextSource],
    audit_url: str | None,
    *,
    rules: tuple[Rule, ...],
    classifier: ClientClassifier,
    tz: tzinfo,
    since: datetime | None,
    fast: bool = True,
    workers: int | None = None,
    on_progress: Callable[[str, int], None] | None = None,
) -> Analysis:
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=tz)
    engine = Engine(rules, classifier, since)
    use_fast = fast and fastscan.available()
    nworkers = workers if workers is not None else min(2, os.cpu_count() or 1)
    analysis = Analysis(engine, tz=tz, fast=use_fast, workers=nworkers)
    config: fastscan.FastConfig | None = None
    if use_fast:
        config = fastscan.FastConfig(
            FAST_ENDPOINTS,
            classifier.classify,
            quiet_predicate(rules, classifier),
            since_key=since.astimezone(tz).strftime("%Y/%m/%d - %H:%M:%S").encode() if since else None,
            has_trusted=bool(classifier.trusted),
        )
    for source in sources:
        stats = analysis.stats.setdefault(source.name, ParseStats())
        parser = LineParser(source.name, tz, stats, zone_hint=source.zone_hint())
        base = 0
        before = file_state(source.path)
        minute_cache: dict[str, int | None] = {}
        for block in _blocks(source, config, nworkers):
            feed_block(engine, parser, block, base, minute_cache)
            base += block.lines
            if on_progress is not None:
                on_progress(source.name, base)
        analysis.custody.append(custody_record(
            source.name, source.kind, source.digest, path=source.path, command=source.argv, before=before,
            after=file_state(source.path), stats=stats, hashed=_HASHED[source.kind]))
    if audit_url:
        stats = analysis.stats.setdefault("audit-db", ParseStats())
        digest = Digest()
        for event in audit_events(audit_url, since):
            stats.lines += 1
            stats.requests += 1
            stats.recognised += 1
            stats.see(event.time)
            digest.update(event.raw.encode("utf-8", "replace") + b"\n")
            engine.feed(event)
        digest.complete = True
        analysis.custody.append(custody_record(
            "audit-db", "audit-db", digest, location=audit_url, stats=stats, hashed=_HASHED["audit-db"]))
    engine.finish()
    return analysis


_HASHED = {
    "file": "the file's bytes as analysed",
    "gzip": "the compressed file as stored",
    "stdin": "the bytes read from standard input, as they streamed",
    "journal": "journalctl's JSON output, as it streamed",
    "docker": "docker logs' output, as it streamed",
    "audit-db": "the records read, one line each as shown in samples (UTF-8, newline-terminated)",
}


def feed_block(engine: Engine, parser: LineParser, block: fastscan.BlockResult, base: int,
               minute_cache: dict[str, int | None]) -> None:
    """One scanned block into the engine: the lines the scanner left to the parser, in order, and the
    owner traffic it counted. ``base``: lines of the source before the block. Shared by investigate
    (whole files) and watch (what each poll read)."""
    stats = parser.stats
    for slow in block.slow:
        lineno = base + slow.index + 1
        if lineno > parser.last_line + 1:  # the scanner counted the lines between (a crash's trace
            parser.skipped()  # stops at the first of them, a gin line: the parser must know)
        if slow.request is not None:
            engine.feed(parser.parse_request(slow.request[0], lineno, slow.request[1]))
            continue
        ctx = None
        if slow.context is not None:
            ctx = [(base + i + 1, text) for i, text in slow.context]
        event = parser.parse(slow.text, lineno, ctx)
        if event is not None:
            engine.feed(event)
    for client, counts in block.counts.items():
        first = _gin_time(block.first.get(client), parser.tz)  # the zone the parser settled on
        last = _gin_time(block.last.get(client), parser.tz)
        engine.add_tally(client, first, last, counts, parser.source,
                         _minutes(block.minutes.get(client), parser.tz, minute_cache))
        n = sum(counts.values())
        stats.requests += n
        stats.recognised += n
        stats.see(first)
        stats.see(last)
    stats.recognised += block.other_recognised
    stats.blank += block.other_blank
    if block.dropped_before_since:
        stats.requests += block.dropped_before_since
        stats.recognised += block.dropped_before_since
        if block.dropped_span is not None:
            stats.see(_gin_time(block.dropped_span[0], parser.tz))
            stats.see(_gin_time(block.dropped_span[1], parser.tz))
    stats.lines += block.lines - len(block.slow)


def _minutes(stamps: dict[str, int] | None, tz: tzinfo, cache: dict[str, int | None]) -> dict[int, int]:
    """{"YYYY/MM/DD - HH:MM": n} (server local time) → {Unix minute: n}."""
    out: dict[int, int] = {}
    for stamp, n in (stamps or {}).items():
        minute = cache.get(stamp, -1)
        if minute == -1:
            when = _gin_time(stamp + ":00", tz)
            minute = cache[stamp] = int(when.timestamp()) // 60 if when is not None else None
        if minute is not None:
            out[minute] = out.get(minute, 0) + n
    return out


def _gin_time(text: str | None, tz: tzinfo) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y/%m/%d - %H:%M:%S").replace(tzinfo=tz)
    except ValueError:
        return None


# --- block production --------------------------------------------------------------------------

_WORKER_CONFIG: fastscan.FastConfig | None = None
_BUFFER: bytearray | None = None


def _blocks(
    source: TextSource, config: fastscan.FastConfig | None, workers: int
) -> Iterator[fastscan.BlockResult]:
    if config is not None and source.path is not None and not source.gzipped:
        try:
            size = source.path.stat().st_size
        except OSError:
            size = 0
        if workers > 1 and size >= PARALLEL_MIN_SIZE and _can_fork():
            # the pieces are read in the workers: the first `size` bytes are hashed here meanwhile
            digest = source.digest = Digest()
            hasher = FileHasher(source.path, size, digest)
            hasher.start()
            done = False
            try:
                yield from _parallel_blocks(str(source.path), size, config, workers)
                done = True
            finally:
                if not done:
                    hasher.stopped.set()
                hasher.join()
            return
        if size > 0:  # read straight into padded buffers: no copies (and hashed from them)
            digest = source.digest = Digest()
            for start, end in _pieces(str(source.path), size):
                yield _scan_range(str(source.path), start, end, config, digest)
            digest.complete = digest.size == size
            return
    for chunk in source.chunks():
        yield fastscan.scan_block(chunk, config)


def _can_fork() -> bool:
    import multiprocessing  # only for logs big enough to be split: start-up time

    return "fork" in multiprocessing.get_all_start_methods()


def _pieces(path: str, size: int) -> list[tuple[int, int]]:
    bounds = [0]
    with open(path, "rb") as fh:
        pos = PIECE_SIZE
        while pos < size:
            fh.seek(pos)
            fh.readline()
            cut = fh.tell()
            if cut >= size:
                break
            if cut > bounds[-1]:
                bounds.append(cut)
            pos = cut + PIECE_SIZE
    bounds.append(size)
    return list(itertools.pairwise(bounds))


def _scan_range(
    path: str, start: int, end: int, config: fastscan.FastConfig | None = None, digest: Digest | None = None
) -> fastscan.BlockResult:
    global _BUFFER
    size = end - start
    if _BUFFER is None or len(_BUFFER) < size + fastscan.PAD:
        # Reused for every piece; a log smaller than one piece gets only its size (zeroing a 33 MB
        # buffer costs a small log's run ~20 ms).
        capacity = size if size < PIECE_SIZE else max(size, PIECE_SIZE + (1 << 20))
        _BUFFER = bytearray(capacity + fastscan.PAD)
    buf = _BUFFER
    view = memoryview(buf)
    got = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        while got < size:
            n = fh.readinto(view[got:size])
            if not n:
                break
            got += n
    if digest is not None:
        digest.update(view[:got])
    view.release()
    buf[got : got + fastscan.PAD] = bytes(fastscan.PAD)
    return fastscan.scan_block(buf, config or _WORKER_CONFIG, padded=True, length=got)


def _parallel_blocks(
    path: str, size: int, config: fastscan.FastConfig, workers: int
) -> Iterator[fastscan.BlockResult]:
    import multiprocessing

    global _WORKER_CONFIG
    _WORKER_CONFIG = config
    ctx = multiprocessing.get_context("fork")
    pieces = _pieces(path, size)
    with ctx.Pool(workers) as pool:
        pending: list[multiprocessing.pool.AsyncResult[fastscan.BlockResult]] = []
        todo = iter(pieces)
        for start, end in todo:
            pending.append(pool.apply_async(_scan_range, (path, start, end)))
            if len(pending) >= IN_FLIGHT:
                break
        while pending:
            result = pending.pop(0).get()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.apply_async(_scan_range, (path, *nxt)))
            yield result
