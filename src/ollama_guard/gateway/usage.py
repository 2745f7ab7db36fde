"""Token usage in a relayed answer: the counts Ollama reported, read only where Ollama writes them, as
the answer passes (stream or whole body, never buffered); and an estimate from what was relayed when
the answer carries none (`stages/account.py` decides what is charged).

Where the counts are, per route, is data (`ollama_guard.ollama.generation`): top-level fields of an
answer object (a stream line, an SSE event's data, or the whole body) or fields of a top-level object
such as `usage`. The scanner below follows the JSON structure — strings, escapes, nesting — across
chunk boundaries, so a field name inside generated content (text, or tool-call arguments, which the
native API writes as JSON objects at any depth) is never taken for a count, however it is nested or
split between chunks; and a count written before a megabyte-long `logprobs` array is still found.
"""

from __future__ import annotations

import re

from ollama_guard.ollama.generation import FieldPath, TokenAccounting

_STRUCTURAL = re.compile(rb'[{}\[\]":,]')  # in an object whose fields matter
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.S)
# inside anything else only strings and nesting matter: skip (in C) whole strings and whole containers
# up to three levels deep, to the next bracket that opens a deeper one or closes the current one
# (possessive quantifiers: nothing is tried twice, a container the chunk cuts costs one pass)
_STR = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_INNER = rb'(?:[^"{}\[\]]++|' + _STR + rb")*+"  # a container's content without containers
for _ in range(3):
    _INNER = rb'(?:[^"{}\[\]]++|' + _STR + rb"|\{" + _INNER + rb"\}|\[" + _INNER + rb"\])*+"
_SKIP = re.compile(_INNER, re.S)
_LINE_OBJECT = re.compile(rb"\{" + _INNER + rb"\}[ \t\r]*+\n", re.S)  # a whole object, then its line ends
_SCALAR_END = re.compile(rb"[\s,}\]]")
_COUNT = re.compile(rb"\d{1,15}")
_MAX_KEY = 64  # longer keys are not ones we look for
_MAX_SCALAR = 24


class TokenCounter:
    """Reads the token counts of one answer as it is relayed, and counts what was relayed.

    A count is taken from a complete answer object only (and, for the native API, only from the final
    one, ``"done": true``); the last object that reports wins. A report whose counts add up to 0 (an
    unfinished ``/v1/completions`` stream puts zeros in every chunk) is no report. When there is none
    — above all when the client hung up before the final object — the request is charged its
    reservation, or what was relayed if that is more: one token per NDJSON line (Ollama streams one
    line per generated piece) or per SSE event.
    """

    __slots__ = (
        "_after_colon",
        "_capture",
        "_escape",
        "_final_path",
        "_in_string",
        "_is_key",
        "_key",
        "_markers",
        "_object",
        "_paths",
        "_prefixes",
        "_scalar",
        "_scalar_path",
        "_stack",
        "accounting",
        "done_seen",
        "events",
        "found",
        "lines",
        "partial",
        "relayed",
    )

    def __init__(self, accounting: TokenAccounting) -> None:
        self.accounting = accounting
        self.found: dict[FieldPath, int] = {}
        self.events = 0
        self.lines = 0
        self.partial = False  # the relayed bytes end inside a line
        self.relayed = 0
        self.done_seen = False  # an SSE stream's closing `data: [DONE]`
        counts = {path for alternative in accounting.counts for path in alternative}
        self._final_path: FieldPath | None = (accounting.final,) if accounting.final else None
        self._paths = counts | ({self._final_path} if self._final_path else set())
        self._prefixes = {path[:i] for path in self._paths for i in range(len(path))}
        # a whole answer line without any of these top-level names cannot report anything
        self._markers = tuple({b'"%s"' % path[0].encode() for path in counts})
        # scanner state: open containers (the field path of a watched object, None for the rest)
        self._stack: list[FieldPath | None] = []
        self._object: dict[FieldPath, int | bool] = {}  # values seen in the current answer object
        self._in_string = False
        self._escape = False
        self._is_key = False
        self._capture: bytearray | None = None  # a key being read in a watched object
        self._key: bytes | None = None
        self._after_colon = False
        self._scalar: bytearray | None = None  # a watched field's number or boolean being read
        self._scalar_path: FieldPath = ()

    # --- feeding ------------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.relayed += len(chunk)
        self.lines += chunk.count(b"\n")
        self.partial = not chunk.endswith(b"\n")
        if b"data:" in chunk:
            self.events += chunk.count(b"data:")
        if b"[DONE]" in chunk:
            self.done_seen = True
        if self._paths:
            self._scan(chunk)

    def _scan(self, data: bytes) -> None:
        pos, end = 0, len(data)
        stack = self._stack
        while pos < end:
            if self._in_string:
                pos = self._string(data, pos)
            elif self._scalar is not None:
                pos = self._read_scalar(data, pos)
            elif not stack:
                pos = self._between_objects(data, pos)
            elif stack[-1] is None:
                skipped = _SKIP.match(data, pos)
                assert skipped is not None  # the pattern matches the empty string
                pos = skipped.end()
                if pos >= end:
                    return
                char = data[pos]
                pos += 1
                if char == 0x22:  # " — a string the chunk cuts
                    self._in_string, self._is_key, self._capture = True, False, None
                elif char in (0x7B, 0x5B):  # { [
                    stack.append(None)
                else:
                    stack.pop()
            else:
                pos = self._watched(data, pos)

    def _between_objects(self, data: bytes, pos: int) -> int:
        """Outside any object: skip framing (`data: `, `event: …`, newlines) to the next object.
        An object that is whole on its line (Ollama writes each stream object and each SSE event's
        data on one line) and names none of the fields looked for is skipped without reading it."""
        start = data.find(b"{", pos)
        if start < 0:
            return len(data)
        line = _LINE_OBJECT.match(data, start)
        if line is not None:
            end = line.end()
            for marker in self._markers:
                if data.find(marker, start, end) >= 0:
                    break
            else:
                return end
        self._stack.append(())
        self._object = {}
        self._key, self._after_colon = None, False
        return start + 1

    def _string(self, data: bytes, pos: int) -> int:
        if self._escape:  # the previous chunk ended with the backslash of an escape
            self._escape = False
            if self._capture is not None:
                self._capture += data[pos : pos + 1]
            pos += 1
            if pos >= len(data):
                return pos
        body = _STRING_BODY.match(data, pos)
        assert body is not None  # the pattern matches the empty string
        stop = body.end()
        capture = self._capture
        if capture is not None and len(capture) <= _MAX_KEY:
            capture += data[pos:stop]
        if stop >= len(data):
            return stop
        if data[stop] == 0x5C:  # a backslash as the chunk's last byte
            if capture is not None:
                capture += b"\\"
            self._escape = True
            return stop + 1
        self._in_string = False  # data[stop] is the closing quote
        if self._is_key:
            self._is_key = False
            self._key = bytes(capture) if capture is not None else None  # a long key: no field
            self._capture = None
        else:
            self._after_colon = False  # a string value
        return stop + 1

    def _watched(self, data: bytes, pos: int) -> int:
        """Inside an object on a path that leads to a count: read its keys and the watched values."""
        match = _STRUCTURAL.search(data, pos)
        if match is None:
            return len(data)
        char = data[match.start()]
        stack = self._stack
        if char == 0x22:  # " — a key unless it follows a colon
            self._in_string = True
            if self._after_colon:
                self._is_key, self._capture = False, None
            else:
                self._is_key, self._capture = True, bytearray()
        elif char == 0x3A:  # :
            self._after_colon = True
            path = stack[-1]
            if self._key is not None and path is not None:
                field = (*path, self._key.decode("latin-1"))
                if field in self._paths:
                    self._scalar, self._scalar_path = bytearray(), field
        elif char == 0x2C:  # ,
            self._key, self._after_colon = None, False
        elif char == 0x7B:  # {
            path = stack[-1]
            child: FieldPath | None = None
            if self._after_colon and self._key is not None and path is not None:
                candidate = (*path, self._key.decode("latin-1"))
                child = candidate if candidate in self._prefixes else None
            stack.append(child)
            self._key, self._after_colon = None, False
        elif char == 0x5B:  # [
            stack.append(None)
            self._after_colon = False
        else:  # } or ]
            stack.pop()
            self._key, self._after_colon = None, False
            if not stack:
                self._end_object()
        return match.end()

    def _read_scalar(self, data: bytes, pos: int) -> int:
        scalar = self._scalar
        assert scalar is not None
        if not scalar:  # skip the blanks after the colon; a string or container is not a count
            while pos < len(data) and data[pos] in b" \t\r\n":
                pos += 1
            if pos >= len(data):
                return pos
            if data[pos] in b'"{[':
                self._scalar = None
                return pos
        match = _SCALAR_END.search(data, pos)
        stop = len(data) if match is None else match.start()
        scalar += data[pos:stop]
        if len(scalar) > _MAX_SCALAR:
            self._scalar = None  # not a count; its end is found as for any other value
            return stop
        if match is not None:
            self._scalar = None
            self._after_colon = False
            value = bytes(scalar)
            if self._scalar_path == self._final_path:
                self._object[self._scalar_path] = value == b"true"
            elif _COUNT.fullmatch(value):
                self._object[self._scalar_path] = int(value)
        return stop

    def _end_object(self) -> None:
        """A whole answer object was read: its counts become the answer's (if it is the final one)."""
        seen, self._object = self._object, {}
        if self._final_path is not None and seen.pop(self._final_path, False) is not True:
            return
        for path, value in seen.items():
            if not isinstance(value, bool):
                self.found[path] = value

    # --- results ------------------------------------------------------------------------------------
    def usage(self) -> int | None:
        """The token count the upstream reported, if it did (a report adding up to 0 is none)."""
        found = self.found
        for alternative in self.accounting.counts:
            values = [found[path] for path in alternative if path in found]
            if values:
                total = sum(values)
                return total if total > 0 else None
        return None

    def relayed_estimate(self, sse: bool) -> int:
        """Tokens that what was relayed must at least have cost (no usage numbers seen)."""
        if not self.relayed:
            return 0
        if sse and self.events:
            if self.done_seen:
                # a complete stream without a usage block (OpenAI streams without
                # stream_options.include_usage): one event per generated piece, a final chunk, [DONE]
                return max(self.events - 2, 1)
            return self.events  # cut short: every relayed event carried a piece
        return max(self.lines + (1 if self.partial else 0), 1)

    def total(self, sse: bool, reserved: int = 0) -> int:
        """What to charge: the reported usage, else the larger of the reservation and the estimate."""
        reported = self.usage()
        if reported is not None:
            return reported
        return max(reserved, self.relayed_estimate(sse))
