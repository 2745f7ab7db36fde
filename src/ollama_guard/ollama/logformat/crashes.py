"""Go crash output: ``panic:``, ``fatal error:``, signals, a unit's abnormal exit, and the frames of a
stack trace."""

from __future__ import annotations

import re

_CRASH_RE = re.compile(
    r"^(?:panic: |fatal error: |SIGSEGV: |SIGBUS: |SIGILL: |SIGABRT: )|\[signal SIG[A-Z]+: "
    r"|Main process exited, code=(?:killed|dumped)|Main process exited, code=exited, status=[1-9]"
    r"|^goroutine \d+ (?:gp=\S+ m=\S+ (?:mp=\S+ )?)?\[running\]:"
)
# a frame's file line: a tab (rsyslog writes it as "#011"), spaces (journalctl and pastes turn the tab
# into them), or nothing (Docker Desktop's view drops it)
_FRAME_RE = re.compile(r"^(?:\t|#011| +)?(\S+\.go):(\d+)(?: \+0x[0-9a-f]+| |$)")
_FRAME_ARGS = re.compile(r"\((?:[^()]|\(\.\.\.\))*\)$")


def crash_kind(message: str) -> str | None:
    """``panic`` / ``fatal`` / ``signal`` / ``exit`` when the line starts or reports a crash."""
    m = _CRASH_RE.search(message)
    if m is None:
        return None
    head = m.group(0)
    if head.startswith("panic"):
        return "panic"
    if head.startswith("fatal"):
        return "fatal"
    if head.startswith("Main process"):
        return "exit"
    if head.startswith("goroutine"):
        return "trace"  # a dump whose header line ("panic: …") is missing
    return "signal"


def stack_frames(lines: list[str], limit: int = 4) -> list[str]:
    """The first function frames (``pkg.Func`` at ``file.go:N``) of a Go stack trace."""
    frames: list[str] = []
    for i, line in enumerate(lines):
        fm = _FRAME_RE.match(line)
        if fm and i > 0:
            # "pkg.Func(args)", "pkg.(*Type).Method(args)", "pkg.Type.Method(...)": drop the arguments only
            func = _FRAME_ARGS.sub("", lines[i - 1].replace("#011", "").strip())
            if func.startswith(("runtime.", "panic(", "goroutine ", "created by ")) or not func:
                continue
            frames.append(f"{func} ({fm.group(1).rsplit('/', 1)[-1]}:{fm.group(2)})")
            if len(frames) >= limit:
                break
    return frames
