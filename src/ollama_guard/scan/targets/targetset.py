"""``TargetSet``: everything a scan will visit — specifications and ``-iL`` files, less exclusions —
expanded lazily."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from ollama_guard.errors import InputError
from ollama_guard.scan.targets.exclusions import Exclusions
from ollama_guard.scan.targets.files import file_specs
from ollama_guard.scan.targets.ports import DEFAULT_PORTS
from ollama_guard.scan.targets.specs import AddressBlock, HostSpec, parse_spec
from ollama_guard.scan.targets.target import Target


class TargetSet:
    """Everything a scan will visit, expanded lazily; iterate it for `Target`s."""

    def __init__(
        self,
        tokens: Iterable[str] = (),
        *,
        files: Iterable[str] = (),
        ports: tuple[int, ...] = DEFAULT_PORTS,
        exclusions: Exclusions | None = None,
    ) -> None:
        self.ports = ports
        self.specs: list[HostSpec] = [parse_spec(t) for t in tokens]
        self.files = list(files)
        self.exclusions = exclusions or Exclusions()
        for path in self.files:
            # Pipes count (`-iL <(masscan …)`, /dev/stdin): only a missing path or a directory is refused.
            if path != "-" and not Path(path).exists():
                raise InputError(f"cannot read target file {path}: no such file")
            if path != "-" and Path(path).is_dir():
                raise InputError(f"cannot read target file {path}: it is a directory")
        if not self.specs and not self.files:
            raise InputError("no targets given (name at least one TARGET or use -iL FILE)")

    def count(self) -> int | None:
        """How many address:port pairs the command-line specs produce (before exclusions); None when
        files are involved (their length is not known without reading them)."""
        if self.files:
            return None
        return sum(spec.count(self.ports) for spec in self.specs)

    def __iter__(self) -> Iterator[Target]:
        excl = self.exclusions
        for spec in self.specs:
            if excl and spec.name is not None and excl.excludes_name(spec.name):
                continue
            if excl and spec.block is not None and self._fully_excluded(spec.block):
                continue
            for target in spec.targets(self.ports):
                if excl and not target.is_name and excl.excludes_address(target.host):
                    continue
                yield target
        for path in self.files:
            for target in file_specs(path, self.ports):
                if excl:
                    if target.is_name and excl.excludes_name(target.host):
                        continue
                    if not target.is_name and excl.excludes_address(target.host):
                        continue
                yield target

    def _fully_excluded(self, block: AddressBlock) -> bool:
        return any(
            b.version == block.version and b.first <= block.first and block.last <= b.last
            for b in self.exclusions.blocks
        )
