"""How a request is refused before the handler runs, with the exact bytes Go's net/http writes (Go 1.19).

431 past the header limit, 501 for a transfer coding other than chunked, ``400 Bad Request: <text>`` for
Go's statusError texts, a bare ``400 Bad Request`` for everything else, silence (``Quiet``) for a
connection that ends before a request line; ``BodyError`` is what a handler sees when the body breaks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ollama_guard.decoy.transport.request import GoRequest


class Quiet(Exception):
    """The connection ended before a request started: Go closes without answering."""


class Reject(Exception):
    """A request Go refuses before its handler runs; `answer` is the exact bytes Go writes."""

    def __init__(self, answer: bytes, close_write: bool = False) -> None:
        super().__init__(answer[:40])
        self.answer = answer
        self.close_write = close_write


_ERROR_HEADERS = b"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
TOO_LARGE = Reject(
    b"HTTP/1.1 431 Request Header Fields Too Large" + _ERROR_HEADERS + b"431 Request Header Fields Too Large",
    close_write=True,
)
BAD_REQUEST = Reject(b"HTTP/1.1 400 Bad Request" + _ERROR_HEADERS + b"400 Bad Request")
UNSUPPORTED_TE = Reject(b"HTTP/1.1 501 Not Implemented" + _ERROR_HEADERS + b"Unsupported transfer encoding")


def status_error(code: int, reason: str, text: str) -> Reject:
    """Go's statusError answer: `HTTP/1.1 400 Bad Request: missing required Host header` …"""
    head = f"{code} {reason}: {text}".encode("latin-1")
    return Reject(b"HTTP/1.1 " + head + _ERROR_HEADERS + head)


def bad_request(text: str) -> Reject:
    return status_error(400, "Bad Request", text)


class BodyError(Exception):
    """Reading the request body failed; the text is Go's error string as a handler would see it."""


class ExpectationFailed(Exception):
    """An ``Expect`` header other than 100-continue: Go answers 417 (the server writes it)."""

    def __init__(self, req: GoRequest) -> None:
        super().__init__("expectation failed")
        self.req = req
