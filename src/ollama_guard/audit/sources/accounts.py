"""Local accounts and name resolution of the audited system (`/etc/passwd`, `/etc/hosts`)."""

from __future__ import annotations

from ollama_guard.audit.hostspec import parse_hosts_file
from ollama_guard.audit.rootfs import RootFS


def read_passwd(fs: RootFS) -> dict[str, tuple[int, str]]:
    """user name → (uid, home directory) from the root's /etc/passwd."""
    table: dict[str, tuple[int, str]] = {}
    text = fs.read_text("/etc/passwd") or ""
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 7 or not fields[2].isdigit():
            continue
        table.setdefault(fields[0], (int(fields[2]), fields[5]))
    return table


def read_hosts(fs: RootFS) -> dict[str, list[str]]:
    return parse_hosts_file(fs.read_text("/etc/hosts") or "")


def home_of(user: str | None, passwd: dict[str, tuple[int, str]]) -> str | None:
    """The home directory of `user` (root when no user is named, as systemd runs services)."""
    name = user or "root"
    if name in passwd:
        return passwd[name][1]
    return "/root" if name == "root" else None
