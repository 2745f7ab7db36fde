"""``-iL FILE``: plain target lists and scanner output (masscan -oL/-oJ/-oD/-oX/-oG, nmap -oX/-oG), read
lazily."""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from typing import IO

from ollama_guard.errors import InputError
from ollama_guard.scan.targets.specs import ip_of, parse_spec
from ollama_guard.scan.targets.target import Target


def _open_text(path: str) -> IO[str]:
    if path == "-":
        return sys.stdin
    try:
        return open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read target file {path}: {exc.strerror or exc}") from None


def sniff_format(head: str) -> str:
    """Which kind of target file this is, from its first few kilobytes."""
    stripped = head.lstrip("\ufeff \t\r\n")
    if stripped.startswith("<?xml") or stripped.startswith("<nmaprun") or "<nmaprun" in head[:2048]:
        return "xml"
    if stripped.startswith("#masscan") or re.search(r"^open\s+tcp\s+\d+\s+\S+", stripped, re.M):
        return "masscan-list"
    if stripped.startswith("[") or stripped.startswith("{"):
        return "masscan-json"
    if re.search(r"^(?:Timestamp:\s*\d+\s+)?Host:\s+\S+", stripped, re.M):
        return "grepable"
    return "list"


def file_specs(path: str, ports: tuple[int, ...]) -> Iterator[Target]:
    """Targets from an `-iL` file, read lazily line by line (or element by element for XML)."""
    handle = _open_text(path)
    try:
        head = handle.read(8192)
        kind = sniff_format(head)
        lines = _chain_head(head, handle)
        if kind == "xml":
            yield from _xml_targets(head, handle, path)
        elif kind == "masscan-list":
            yield from _masscan_list_targets(lines)
        elif kind == "masscan-json":
            yield from _masscan_json_targets(lines, path)
        elif kind == "grepable":
            yield from _grepable_targets(lines, ports)
        else:
            yield from _list_targets(lines, ports, path)
    finally:
        if handle is not sys.stdin:
            handle.close()


def _chain_head(head: str, handle: IO[str]) -> Iterator[str]:
    """Lines of the file, given the already-read head and the rest of the handle."""
    pending = head
    for chunk in iter(lambda: handle.read(65536), ""):
        pending += chunk
        *complete, pending = pending.split("\n")
        yield from complete
    if pending:
        yield from pending.split("\n")


def _list_targets(lines: Iterable[str], ports: tuple[int, ...], path: str) -> Iterator[Target]:
    for number, line in enumerate(lines, 1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        for token in content.replace(",", " ").split():
            try:
                spec = parse_spec(token)
            except InputError as exc:
                raise InputError(f"{path}:{number}: {exc}") from None
            yield from spec.targets(ports)


def _ip_target(address: str, port: int) -> Target | None:
    ip = ip_of(address)
    if ip is None or not 1 <= port <= 65535:
        return None
    return Target(str(ip), port)


def _masscan_list_targets(lines: Iterable[str]) -> Iterator[Target]:
    # "open tcp 11434 10.0.0.5 1700000000"
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "open" and fields[1] == "tcp" and fields[2].isdigit():
            target = _ip_target(fields[3], int(fields[2]))
            if target is not None:
                yield target


def _masscan_json_targets(lines: Iterable[str], path: str) -> Iterator[Target]:
    """masscan -oJ (an array, one object per line, trailing commas) and -oD (NDJSON)."""
    for line in lines:
        text = line.strip().rstrip(",").strip()
        if not text.startswith("{"):
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue  # e.g. old masscan's "{finished: 1}" trailer
        if not isinstance(record, dict) or "ip" not in record:
            continue
        address = str(record["ip"])
        port_records = record.get("ports")
        if isinstance(port_records, list):
            for entry in port_records:
                if not isinstance(entry, dict):
                    continue
                if entry.get("proto", "tcp") != "tcp" or entry.get("status", "open") != "open":
                    continue
                target = _ip_target(address, _as_int(entry.get("port")))
                if target is not None:
                    yield target
        elif "port" in record:  # -oD
            data = record.get("data") if isinstance(record.get("data"), dict) else {}
            if record.get("proto", "tcp") == "tcp" and data.get("status", "open") == "open":
                target = _ip_target(address, _as_int(record.get("port")))
                if target is not None:
                    yield target


def _as_int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


_GREP_HOST = re.compile(r"Host:\s+(\S+)\s+\(([^)]*)\)")


def _grepable_targets(lines: Iterable[str], ports: tuple[int, ...]) -> Iterator[Target]:
    """nmap/masscan -oG. `Ports:` lines give open TCP ports; hosts only seen as `Status: Up` (a ping scan)
    get the --ports list."""
    up_only: dict[str, None] = {}
    with_ports: set[str] = set()
    for line in lines:
        match = _GREP_HOST.search(line)
        if not match:
            continue
        address = match.group(1)
        if ip_of(address) is None:
            continue
        if "Ports:" in line:
            with_ports.add(address)
            up_only.pop(address, None)
            port_field = line.split("Ports:", 1)[1].split("\t")[0]
            for entry in port_field.split(","):
                parts = entry.strip().split("/")
                if len(parts) >= 3 and parts[1] == "open" and parts[2] == "tcp" and parts[0].isdigit():
                    target = _ip_target(address, int(parts[0]))
                    if target is not None:
                        yield target
        elif re.search(r"Status:\s+Up", line) and address not in with_ports:
            up_only.setdefault(address, None)
    for address in up_only:
        for port in ports:
            yield Target(address, port)


def _xml_targets(head: str, handle: IO[str], path: str) -> Iterator[Target]:
    """nmap -oX / masscan -oX: `<host><address addr=…/><ports><port protocol=tcp portid=…>` with
    `<state state=open/>`."""

    class _Feed:
        def __init__(self) -> None:
            self.first: str | None = head

        def read(self, size: int = -1) -> str:
            if self.first is not None:
                data, self.first = self.first, None
                return data
            return handle.read(size if size and size > 0 else 65536)

    try:
        for _event, element in ET.iterparse(_Feed(), events=("end",)):  # noqa: S314
            if element.tag != "host":
                continue
            address = None
            for addr in element.findall("address"):
                if addr.get("addrtype") in ("ipv4", "ipv6"):
                    address = addr.get("addr")
                    break
            if address:
                for port in element.iter("port"):
                    state = port.find("state")
                    if port.get("protocol", "tcp") != "tcp" or state is None or state.get("state") != "open":
                        continue
                    target = _ip_target(address, _as_int(port.get("portid")))
                    if target is not None:
                        yield target
            element.clear()
    except ET.ParseError as exc:
        raise InputError(f"{path}: bad XML scan output: {exc}") from None
