"""``--exclude``: addresses, blocks and names never to be scanned."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable

from ollama_guard.scan.targets.specs import AddressBlock, ip_of, parse_spec


class Exclusions:
    """Addresses, blocks and names never to be scanned (`--exclude`)."""

    def __init__(self, specs: Iterable[str] = ()) -> None:
        self.blocks: list[AddressBlock] = []
        self.names: set[str] = set()
        for raw in specs:
            for token in re.split(r"[,\s]+", raw):
                if token:
                    self._add(token)

    def _add(self, token: str) -> None:
        spec = parse_spec(token, size_limit=None)
        if spec.block is not None:
            self.blocks.append(spec.block)
        elif spec.name is not None:
            self.names.add(spec.name)
            # A name also excludes what it resolves to now, so `--exclude db.lan` covers a scan of its CIDR.
            try:
                infos = socket.getaddrinfo(spec.name, None, type=socket.SOCK_STREAM)
            except OSError:
                return
            for info in infos:
                ip = ip_of(str(info[4][0]).split("%")[0])
                if ip is not None:
                    self.blocks.append(AddressBlock(ip.version, int(ip), int(ip)))

    def __bool__(self) -> bool:
        return bool(self.blocks or self.names)

    def excludes_address(self, address: str) -> bool:
        if not self.blocks:
            return False
        ip = ip_of(address.split("%")[0])
        if ip is None:
            return False
        key = (ip.version, int(ip))
        return any(key in block for block in self.blocks)

    def excludes_name(self, name: str) -> bool:
        return name.lower().rstrip(".") in self.names
