"""The ASGI twin of tests/go/refserver/main.go: same answers for the same request, so that any byte
that differs between the two servers comes from the transport under test, not from the handler."""

from __future__ import annotations

from typing import Any

from ollama_guard.decoy.transport.request import BodyError, canonical_key


def go_quote(data: bytes) -> str:
    """Go's %q of a string (strconv.Quote) for raw bytes."""
    out = ['"']
    text = data.decode("utf-8", "surrogateescape")
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an invalid UTF-8 byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in '"\\':
            out.append("\\" + ch)
        elif ch == " " or (ch.isprintable() and code != 0x7F):
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append(
                {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[
                    ch
                ]
            )
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _describe(scope: dict[str, Any], body: str) -> str:
    req = scope["go_request"]
    lines = [
        f"{req.method} {go_quote(req.path.encode('utf-8', 'surrogateescape'))} "
        f"{go_quote(req.query.encode('latin-1'))} HTTP/{req.proto[0]}.{req.proto[1]}",
        f"host={go_quote(req.host.encode('latin-1'))} cl={req.content_length}",
    ]
    values: dict[str, list[bytes]] = {}
    for key, value in scope["headers"]:
        name = canonical_key(key)
        if name != "Host":
            values.setdefault(name, []).append(value)
    for name in sorted(values):
        lines.append(f"{name}=[{' '.join(go_quote(v) for v in values[name])}]")
    return "\n".join(lines) + "\n" + body


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope["path"]
    body = ""
    if path != "/noread":
        chunks: list[bytes] = []
        try:
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            data = b"".join(chunks)
            body = f"body {len(data)} {go_quote(data)}\n"
        except BodyError as exc:
            body = f"body error: {exc}\n"
    text = _describe(scope, body).encode("utf-8", "surrogateescape")

    async def answer(status: int, headers: list[tuple[bytes, bytes]], *parts: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    plain = [(b"content-type", b"text/plain; charset=utf-8")]
    if path == "/stream":
        await answer(
            200, [(b"content-type", b"application/x-ndjson")], *[b'{"n":%d}\n' % i for i in range(3)]
        )
    elif path == "/big":
        await _whole(send, 200, [(b"content-type", b"application/json; charset=utf-8")], text + b"x" * 3000)
    elif path == "/two":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"a" * 1500, "more_body": True, "flush": False})
        await send({"type": "http.response.body", "body": b"b" * 1000, "more_body": False})
    elif path == "/exact":
        await _whole(send, 200, [(b"content-type", b"text/plain")], b"e" * 2048)
    elif path == "/empty":
        await _whole(send, 200, [], b"")
    elif path == "/sniff":
        await _whole(send, 200, [], b"<html><body>" + text + b"</body></html>")
    elif path == "/declared":
        await _whole(
            send,
            200,
            [
                (b"content-length", str(len(text)).encode()),
                (b"x-zeta", b"z"),
                (b"access-control-allow-origin", b"*"),
            ],
            text,
        )
    elif path.startswith("/status/"):
        await _whole(send, int(path[len("/status/") :]), plain, text)
    else:
        await _whole(send, 200, plain, text)


async def _whole(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
