"""Start our own servers (decoy, gateway, …) as subprocesses for tests, and stop them reliably.

Every server of ours prints `<something> listening on URL` as a stdout line once it accepts connections.
`start_process` waits for that line (with a timeout), returns the process and the URL, and keeps draining
the process's stdout/stderr in background threads so it can never block on a full pipe.
`stop_process` kills the whole process group (the process is started in its own session).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DECOY_READY = "ollama-guard decoy listening on "
GATEWAY_READY = "ollama-guard gateway listening on "
GUARD_ARGV = (sys.executable, "-m", "ollama_guard")
# The decoy alone (same options as `ollama-guard decoy`), so decoy-based tests don't depend on every
# other command importing cleanly.
DECOY_ARGV = (sys.executable, "-m", "ollama_guard.decoy")

# Output of every process started here, kept for error messages: pid -> last lines.
_OUTPUT: dict[int, collections.deque[str]] = {}


class ServerStartError(RuntimeError):
    """The server exited or stayed silent before printing its ready line."""


def _drain(
    stream: Any, sink: collections.deque[str], ready: list[str], prefix: str, event: threading.Event
) -> None:
    for raw in iter(stream.readline, ""):
        line = raw.rstrip("\n")
        sink.append(line)
        if not event.is_set() and prefix and prefix in line:
            ready.append(line.split(prefix, 1)[1].strip())
            event.set()
    stream.close()


def start_process(
    argv: Sequence[str],
    ready_prefix: str = " listening on ",
    timeout: float = 20.0,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """Start argv in its own process group and wait until it prints a line containing `ready_prefix`.

    Returns (process, url) where url is the rest of that line after the prefix. On timeout or early exit
    the process group is killed and ServerStartError carries the process's last output lines.
    `env` entries are added to the current environment.
    """
    full_env = dict(os.environ)
    full_env["PYTHONUNBUFFERED"] = "1"
    if env:
        full_env.update(env)
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=full_env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=preexec_fn,
    )
    output: collections.deque[str] = collections.deque(maxlen=200)
    _OUTPUT[proc.pid] = output
    ready: list[str] = []
    event = threading.Event()
    never = threading.Event()
    threading.Thread(
        target=_drain, args=(proc.stdout, output, ready, ready_prefix, event), daemon=True
    ).start()
    threading.Thread(target=_drain, args=(proc.stderr, output, [], "", never), daemon=True).start()
    deadline = time.monotonic() + timeout
    while not event.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            event.wait(0.2)  # a line may still be in flight
            if event.is_set():
                break
            reason = (
                f"exited with {proc.returncode}" if proc.poll() is not None else f"not ready after {timeout}s"
            )
            stop_process(proc)
            tail = "\n".join(list(output)[-40:])
            raise ServerStartError(f"{' '.join(argv)}: {reason}; output:\n{tail}")
    return proc, ready[0]


def process_output(proc: subprocess.Popen[str]) -> str:
    """What the process printed so far (stdout and stderr interleaved, last 200 lines)."""
    return "\n".join(_OUTPUT.get(proc.pid, ()))


def stop_process(proc: subprocess.Popen[str], grace: float = 3.0) -> int | None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left in the group (children the server started) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    return proc.returncode


@contextlib.contextmanager
def running_process(
    argv: Sequence[str],
    ready_prefix: str = " listening on ",
    timeout: float = 20.0,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`start_process` as a context manager that always stops the process group on exit."""
    proc, url = start_process(argv, ready_prefix, timeout, env=env, cwd=cwd)
    try:
        yield proc, url
    finally:
        stop_process(proc)


@dataclass
class DecoyProcess:
    """A running `ollama-guard decoy`."""

    proc: subprocess.Popen[str]
    url: str
    models_dir: Path
    request_log: Path
    argv: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def hostport(self) -> str:
        """`host:port` as written in the URL (IPv6 in brackets)."""
        return self.url.split("://", 1)[1]

    def requests(self) -> list[dict[str, Any]]:
        """Every request logged so far, oldest first (one dict per JSON line; see decoy/requestlog.py).

        Keys: time, client ("ip:port"), method, path (raw, without query), query, headers ([[name, value]]
        with lower-case names), body (decoded text, at most 64 KiB; None for blob uploads), body_size,
        body_truncated or body_sha256 (blob uploads), status, duration_ms. A line is on disk before the
        last byte of its response is sent, so after a client has read a whole response it is there.
        """
        from ollama_guard.decoy.requestlog import read_request_log

        return read_request_log(self.request_log)

    def output(self) -> str:
        return process_output(self.proc)

    def stop(self) -> int | None:
        return stop_process(self.proc)


@contextlib.contextmanager
def start_decoy(
    tmp_path: Path,
    *,
    host: str = "127.0.0.1",
    version: str = "0.6.5",
    seed_models: int = 2,
    extra_args: Sequence[str] = (),
    models_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
) -> Iterator[DecoyProcess]:
    """Run `ollama-guard decoy --port 0` with its store and request log under tmp_path; stopped on exit.

    models_dir defaults to tmp_path/"decoy-models" (reused if it exists), the request log is
    tmp_path/"decoy-requests.jsonl" (a new name is chosen if that one exists, so two decoys in one
    tmp_path don't share a log). `extra_args` go last (e.g. ("--origins", "*"), ("--stream-delay", "0")).
    """
    store = models_dir if models_dir is not None else tmp_path / "decoy-models"
    log = tmp_path / "decoy-requests.jsonl"
    n = 1
    while log.exists():
        n += 1
        log = tmp_path / f"decoy-requests-{n}.jsonl"
    argv = [
        *DECOY_ARGV,
        "--host",
        host,
        "--port",
        "0",
        "--models-dir",
        str(store),
        "--ollama-version",
        version,
        "--seed-models",
        str(seed_models),
        "--request-log",
        str(log),
        *extra_args,
    ]
    proc, url = start_process(argv, DECOY_READY, timeout, env=env)
    decoy = DecoyProcess(proc=proc, url=url, models_dir=store, request_log=log, argv=argv)
    try:
        yield decoy
    finally:
        stop_process(proc)
