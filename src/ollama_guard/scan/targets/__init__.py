"""What to scan: target specifications expanded lazily into (address, port) pairs.

A /16 is 65,536 addresses and a /8 sixteen million: nothing here ever builds such a list. Every
specification is an iterable that produces `Target`s on demand and can say how many it will produce
without producing them (`count()`), so the engine and the progress bar work in constant memory.

Accepted specifications (command line, `-iL` files and `--exclude`):
  IPv4/IPv6 address, hostname, CIDR (`10.0.0.0/24`, `fd00::/120`), ranges (`10.0.0.1-10.0.0.50`,
  `10.0.0.1-50`, `fd00::1-fd00::20`), `host:port`, `[v6]:port`, `http(s)://host[:port][/path]`.
`-iL FILE` files are plain lists (one or more targets per line, `#` comments) or scanner output, detected
by content: masscan `-oL`/`-oJ`/`-oD`/`-oX`/`-oG`, nmap `-oX`/`-oG`.

The package: ``target`` (one ``Target``), ``ports`` (``--ports``), ``specs`` (one specification:
address blocks, host:port, URLs), ``exclusions`` (``--exclude``), ``files`` (``-iL`` and the scanner
output formats) and ``targetset`` (``TargetSet``: all of it, expanded lazily).
"""

from ollama_guard.scan.targets.exclusions import Exclusions
from ollama_guard.scan.targets.files import file_specs, sniff_format
from ollama_guard.scan.targets.ports import DEFAULT_PORTS, ai_ports, parse_ports
from ollama_guard.scan.targets.specs import (
    MAX_ADDRESSES_PER_SPEC,
    AddressBlock,
    HostSpec,
    parse_block,
    parse_spec,
)
from ollama_guard.scan.targets.target import Target, format_endpoint
from ollama_guard.scan.targets.targetset import TargetSet

__all__ = [
    "DEFAULT_PORTS",
    "MAX_ADDRESSES_PER_SPEC",
    "AddressBlock",
    "Exclusions",
    "HostSpec",
    "Target",
    "TargetSet",
    "ai_ports",
    "file_specs",
    "format_endpoint",
    "parse_block",
    "parse_ports",
    "parse_spec",
    "sniff_format",
]
