"""What the fast scanner is given (``FastConfig``) and what it returns for a block (``BlockResult``,
``SlowLine``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ollama_guard.investigate.events import LOOPBACK, TRUSTED
from ollama_guard.ollama.logformat import GinFields

PAD = 160  # zero bytes after the data so fixed-offset gathers never leave the buffer


@dataclass
class FastConfig:
    """What the fast path may count instead of parsing: requests from the owner's clients (loopback and
    --trusted) on ``endpoints`` whose (client class, endpoint, status) can match no rule."""

    endpoints: tuple[tuple[str, str], ...]
    client_class: Callable[[str], str]
    is_quiet: Callable[[str, str, str, int], bool]  # (client, method, path, status)
    owner_classes: frozenset[str] = frozenset({LOOPBACK, TRUSTED})
    since_key: bytes | None = None  # "YYYY/MM/DD - HH:MM:SS" in the log's zone; older lines are dropped
    has_trusted: bool = True  # False: only loopback can be an owner (no --trusted networks)
    _quiet_cache: dict[tuple[str, int, int], bool] = field(default_factory=dict)

    def quiet(self, client: str, endpoint_index: int, status: int) -> bool:
        cls = self.client_class(client)
        key = (cls, endpoint_index, status)
        hit = self._quiet_cache.get(key)
        if hit is None:
            method, path = self.endpoints[endpoint_index]
            hit = self.is_quiet(client, method, path, status)
            self._quiet_cache[key] = hit
        return hit


class SlowLine(tuple):  # type: ignore[type-arg]
    """A line for the parser: ``SlowLine((index, text, context, request))``.

    ``index``: 0-based line index within the block; ``context``: for crash lines, the preceding gin
    lines (index, text); ``request``: a well-formed gin line already split in the scanner's process
    (its message and fields). A plain tuple underneath: blocks come back from the worker processes
    pickled, and a tuple subclass without a Python ``__new__`` unpickles at C speed (about a quarter of
    the cost of a dataclass or NamedTuple, per slow line, in the main process).
    """

    __slots__ = ()

    @property
    def index(self) -> int:
        return self[0]  # type: ignore[no-any-return]

    @property
    def text(self) -> str:
        return self[1]  # type: ignore[no-any-return]

    @property
    def context(self) -> list[tuple[int, str]] | None:
        return self[2]  # type: ignore[no-any-return]

    @property
    def request(self) -> tuple[str, GinFields] | None:
        return self[3]  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[type[SlowLine], tuple[tuple[object, ...]]]:
        return SlowLine, (tuple(self),)


@dataclass
class BlockResult:
    lines: int
    slow: list[SlowLine]
    # client → {(method, path, status): count} and the first/last gin timestamps counted for it
    counts: dict[str, dict[tuple[str, str, int], int]] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)
    dropped_before_since: int = 0  # well-formed gin lines older than --since (counted, not analysed)
    dropped_span: tuple[str, str] | None = None
    # lines not handed to the parser that are other Ollama output (ollama.loglines) / blank: the parser
    # counts the lines it sees itself, so every line is judged once, the same way on both paths
    other_recognised: int = 0
    other_blank: int = 0
    # client → {"YYYY/MM/DD - HH:MM": requests counted in that minute} (the timeline chart)
    minutes: dict[str, dict[str, int]] = field(default_factory=dict)


def decode(raw: bytes | bytearray | memoryview) -> str:
    return bytes(raw).decode("utf-8", "replace")


def all_lines(data: bytes) -> BlockResult:
    """The parser sees every line (slow path)."""
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return BlockResult(len(lines), [SlowLine((i, t, None, None)) for i, t in enumerate(lines)])
