"""Listening TCP sockets (live host only) that belong to Ollama or sit on its ports."""

from __future__ import annotations

import psutil

from ollama_guard.audit.model import ListeningSocket
from ollama_guard.redact import redact_command


def collect() -> tuple[list[ListeningSocket], list[str]]:
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError) as exc:
        return [], [f"sockets: cannot list listening sockets ({exc})"]
    out: list[ListeningSocket] = []
    names: dict[int, str] = {}
    for conn in conns:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr:
            continue
        name = None
        if conn.pid:
            if conn.pid not in names:
                try:
                    names[conn.pid] = redact_command(psutil.Process(conn.pid).cmdline(), limit=120)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    names[conn.pid] = ""
            name = names[conn.pid] or None
        out.append(ListeningSocket(conn.laddr.ip, conn.laddr.port, conn.pid, name))
    return out, []
