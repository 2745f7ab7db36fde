"""Header fields as Go 1.19 reads them: textproto.ReadMIMEHeader, CanonicalMIMEHeaderKey and token lists."""

from __future__ import annotations

from ollama_guard.decoy.transport.input import Input
from ollama_guard.decoy.transport.rejects import BAD_REQUEST

TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def canonical_key(raw: bytes) -> str:
    """textproto.CanonicalMIMEHeaderKey (Go 1.19): unchanged unless every byte is a token byte."""
    if any(b not in TOKEN for b in raw):
        return raw.decode("latin-1")
    out = bytearray(raw)
    upper = True
    for i, c in enumerate(out):
        if upper and 97 <= c <= 122:
            c -= 32
        elif not upper and 65 <= c <= 90:
            c += 32
        out[i] = c
        upper = c == 45
    return out.decode("latin-1")


def _ws_trim(data: bytes) -> bytes:
    return data.strip(b" \t\r\n")


def has_token(values: list[str], token: str) -> bool:
    return any(token == part.strip(" \t").lower() for v in values for part in v.split(","))


async def read_header_lines(inp: Input) -> list[tuple[bytes, bytes]]:
    """textproto.ReadMIMEHeader (Go 1.19): continuation lines folded with a space; errors → 400."""
    first = await inp.peek(1)
    if first in (b" ", b"\t"):
        await inp.read_line()
        raise BAD_REQUEST
    fields: list[tuple[bytes, bytes]] = []
    pending: bytearray | None = None
    while True:
        line = await inp.read_line()
        if line is None:
            raise BAD_REQUEST  # io.ErrUnexpectedEOF (or the read limit, checked by the caller)
        if pending is not None and line[:1] in (b" ", b"\t"):
            pending += b" " + _ws_trim(line)
            continue
        if pending is not None:
            fields.append(_split_field(bytes(pending)))
            pending = None
        if not line:
            return [f for f in fields if f[0]]
        if b":" not in line:
            raise BAD_REQUEST
        pending = bytearray(_ws_trim(line))


def _split_field(kv: bytes) -> tuple[bytes, bytes]:
    key, _, value = kv.partition(b":")
    return key, value.lstrip(b" \t")
