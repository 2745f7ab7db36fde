"""Run `ollama-guard watch` as a real process: wait until it follows, read its alerts as they come."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

READY = "ollama-guard watch: following "


def gin(client: str, method: str, path: str, status: int = 200, when: str = "2024/08/19 - 14:13:01",
        latency: str = "414.019µs") -> str:
    return f"[GIN] {when} | {status:3d} | {latency:>13} | {client:>15} | {method:<7}  \"{path}\""


RECON = [gin("203.0.113.9", "GET", p) for p in ("/", "/api/version", "/api/tags", "/api/ps")]
BENIGN = [gin("127.0.0.1", m, p) for m, p in (("GET", "/api/tags"), ("POST", "/api/chat"),
                                               ("POST", "/api/generate"), ("GET", "/api/version"))]


def append(path: Path, lines: Sequence[str]) -> float:
    """Append lines (one write) and return the time they were written."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
    return time.monotonic()


class WatchProcess:
    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, ready: bool = True) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollama_guard", "watch", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, start_new_session=True,
        )
        self.alerts: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.stderr: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        if ready and not self._ready.wait(30):
            self.stop()
            raise AssertionError(f"watch did not start: {self.stderr}")

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.alerts.put((time.monotonic(), json.loads(line)))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))
            if READY in line:
                self._ready.set()

    def next_alert(self, timeout: float = 5.0) -> tuple[float, dict[str, Any]]:
        try:
            return self.alerts.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no alert within {timeout}s; stderr: {self.stderr}") from None

    def wait_for(self, rule: str, timeout: float = 5.0) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {rule} alert within {timeout}s; stderr: {self.stderr}")
            at, alert = self.next_alert(left)
            if alert["rule"] == rule:
                return at, alert

    def said(self, text: str, timeout: float = 3.0) -> bool:
        """Whether a stderr line containing ``text`` arrives within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.stderr):
                return True
            time.sleep(0.05)
        return False

    def no_alert(self, seconds: float) -> None:
        try:
            _, alert = self.alerts.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected alert: {alert['rule']} {alert['target']}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError("watch did not exit after SIGTERM") from None

    def __enter__(self) -> WatchProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
