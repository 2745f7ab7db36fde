"""The stage pipeline split by stage, in process, without I/O and without a profiler
(used by `bench/gateway_parts.py`).

The real `GatewayApp` stages run on a prepared request of the workload: the real key store (its
snapshot, loaded from the bench database), the in-memory limiter, the real JSON judge and policy.
`forward` runs its own logic (headers, relay, listing filter, disconnect watcher) against a canned
upstream answer instead of a socket (an NDJSON answer in one chunk per line, as Ollama streams);
`record` runs with no-op metrics and a dropping recorder, then
the real metrics and the real audit spool (a `Recorder`'s spool, one `write(2)` per record, no writer
process) are timed on their own.

Each stage of each request is timed with `perf_counter` (~0.1 µs per reading); a stage's figure is
the median over all requests, which a busy shared machine's preemptions barely move. Wall time of one
thread doing only CPU work, so it reads as CPU time; no event-loop or socket work is in it.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import parts_servers

Step = Callable[[dict[str, Any]], Awaitable[None]]


class _CannedResponse:
    """`UpstreamResponse`'s interface over a canned answer (what `forward` reads)."""

    def __init__(self, ctype: bytes, body: bytes) -> None:
        self.status = 200
        self.content_type = ctype
        self.content_length = len(body)
        self.raw_headers = [(b"Content-Type", ctype), (b"Content-Length", b"%d" % len(body)),
                            (b"Date", b"Mon, 07 Dec 2026 06:00:00 GMT")]
        self._body = body

    def header(self, name: bytes) -> bytes | None:
        found = None
        for key, value in self.raw_headers:
            if key.lower() == name:
                found = value
        return found

    async def read(self) -> bytes:
        return self._body

    async def iter_chunks(self) -> Any:
        if self.content_type == b"application/x-ndjson":  # as Ollama streams: one line per chunk
            for line in self._body.splitlines(keepends=True):
                yield line
        else:
            yield self._body

    def close(self) -> None:
        return None


class _CannedUpstream:
    def __init__(self, path: str) -> None:
        self.ctype, self.body = parts_servers.canned(path)

    async def open(self, method: str, raw_path: str, headers: Any, data: Any) -> _CannedResponse:
        if hasattr(data, "take"):
            data.take()
        return _CannedResponse(self.ctype, self.body)


async def _sent(_message: Any) -> None:
    return None


def _receiver(body: bytes) -> Any:
    """An ASGI receive: the body once, then nothing (a client that waits for its answer)."""
    state = {"sent": False}

    async def receive() -> dict[str, Any]:
        if not state["sent"]:
            state["sent"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.get_running_loop().create_future()  # never resolved
        return {}

    return receive


async def stage_timings(db_url: str, upstream: str, token: str, method: str, path: str, body: str | None,
                        n: int, repeats: int) -> list[tuple[str, float]]:
    from ollama_guard.gateway.audit import Recorder
    from ollama_guard.gateway.config import load_config
    from ollama_guard.gateway.metrics import GatewayMetrics
    from ollama_guard.gateway.request import AuditFacts, Request
    from ollama_guard.gateway.stages import limits
    from ollama_guard.gateway.stages.account import account, reservation, token_counter
    from ollama_guard.gateway.stages.authenticate import authenticate
    from ollama_guard.gateway.stages.authorise import authorise
    from ollama_guard.gateway.stages.record import before_forward, fields_of, record

    config = load_config(None, {"db": db_url, "upstream": upstream}, {})
    app = parts_servers.gateway_app(config, metrics=False, audit=False)
    await app.startup()
    services = app.services
    assert services is not None
    app.forward.upstream = _CannedUpstream(path)  # type: ignore[assignment]
    raw = (body or "").encode()
    headers = [(b"host", b"127.0.0.1:11435"), (b"authorization", f"Bearer {token}".encode())]
    if body is not None:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "headers": headers,
             "client": ("127.0.0.1", 50000), "ollama_guard.origin_form": True}

    async def new(c: dict[str, Any]) -> None:
        facts = AuditFacts(method=method, path=path, client="127.0.0.1", request_id="bench-1")
        c["req"] = Request(scope, _receiver(raw), _sent, method, path, facts, time.perf_counter())

    async def client(c: dict[str, Any]) -> None:
        app.client(c["req"])

    async def route(c: dict[str, Any]) -> None:
        c["route"], c["params"] = await app.route(c["req"])

    async def authn(c: dict[str, Any]) -> None:
        c["key"] = await authenticate(c["req"].headers, c["req"].facts, services.authenticator)

    async def authz(c: dict[str, Any]) -> None:
        authorise(c["key"], c["route"], config.allow_cloud)

    async def judge(c: dict[str, Any]) -> None:
        c["body"] = await app.judge_body(c["req"], c["route"])

    async def policy(c: dict[str, Any]) -> None:
        c["matcher"] = app.policy(c["req"].facts, c["route"], c["params"], c["key"], c["body"])

    async def reserve(c: dict[str, Any]) -> None:
        c["counter"] = token_counter(c["route"])
        c["reserve"] = reservation(c["route"], c["key"], c["body"], config.token_reservation,
                                   c["req"].facts.bytes_in)

    async def limit(c: dict[str, Any]) -> None:
        c["slot"], c["reserved"] = await limits.admit(services.limiter, c["key"], c["req"].facts,
                                                      c["reserve"])
        await limits.release(c["slot"])

    async def before(c: dict[str, Any]) -> None:
        await before_forward(c["req"].facts, c["route"], services.audit)

    async def forward(c: dict[str, Any]) -> None:
        await app.forward(c["req"], c["route"], c["matcher"], c["body"], c["counter"])
        if c["req"].lease is not None:
            c["req"].lease.release()

    async def acct(c: dict[str, Any]) -> None:
        await account(c["req"].facts, c["route"], c["key"], c["counter"], services.limiter, app.metrics,
                      c["reserved"])

    async def rec(c: dict[str, Any]) -> None:
        record(c["req"].facts, c["req"].started, app.metrics, services.audit)

    steps: list[tuple[str, Step]] = [
        ("request set-up (AuditFacts, Request)", new), ("client", client), ("route", route),
        ("authenticate", authn), ("authorise", authz), ("judge_body", judge), ("policy", policy),
        ("account: reservation", reserve), ("limits: admit + release", limit),
        ("record: before_forward", before), ("forward (canned upstream answer)", forward),
        ("account", acct), ("record (no-op metrics, dropped record)", rec),
    ]

    perf = time.perf_counter
    samples: list[list[float]] = [[] for _ in steps]
    for _i in range(n * repeats):
        c: dict[str, Any] = {}
        for j, (_label, step) in enumerate(steps):
            t0 = perf()
            await step(c)
            samples[j].append(perf() - t0)
    out = [(label, statistics.median(times) * 1e6)
           for (label, _step), times in zip(steps, samples, strict=True)]
    out.append(("sum of the stages above", sum(v for _label, v in out)))

    # the parts `record` adds in the full gateway: real metrics, and the audit spool's write(2)
    c: dict[str, Any] = {}
    for _label, step in steps[:-1]:
        await step(c)
    facts, elapsed = c["req"].facts, 0.0012
    metrics = GatewayMetrics()
    with tempfile.TemporaryDirectory(prefix="og-parts-spool-") as spool:
        recorder = Recorder(db_url, services.secret or b"x" * 32, spool_dir=Path(spool))
        recorder.spool.open()
        try:
            def observe() -> None:
                if hasattr(metrics, "proxying"):  # a plain count (a baseline tree may have the Gauge's)
                    metrics.proxying += 1
                    metrics.proxying -= 1
                else:
                    metrics.in_flight.inc()
                    metrics.in_flight.dec()
                metrics.observe(facts.route, "allow", "bench", elapsed)

            def spool() -> None:
                recorder.record(fields_of(facts, 1.2))

            for label, fn in (("metrics: observe + in-flight gauge", observe),
                              ("audit: record fields + spool write(2)", spool)):
                times = []
                for _i in range(n * repeats):
                    t0 = perf()
                    fn()
                    times.append(perf() - t0)
                out.append((label, statistics.median(times) * 1e6))
        finally:
            recorder.spool.close()
            recorder.spool.release()
    await app.shutdown()
    return out


def run(db_url: str, upstream: str, token: str, method: str, path: str, body: str | None, n: int = 2000,
        repeats: int = 5) -> list[tuple[str, float]]:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(stage_timings(db_url, upstream, token, method, path, body, n, repeats))
