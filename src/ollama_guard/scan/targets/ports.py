"""``--ports``: lists, ranges, ``default`` and ``ai`` (the default ports of every AI server we
fingerprint)."""

from __future__ import annotations

from functools import lru_cache

from ollama_guard.errors import InputError

DEFAULT_PORTS: tuple[int, ...] = (11434,)


@lru_cache(maxsize=1)
def ai_ports() -> tuple[int, ...]:
    """Default ports of every self-hosted AI server we fingerprint (`--ports ai`)."""
    from ollama_guard.scan.fingerprints import load_fingerprints

    seen: dict[int, None] = {}
    for fp in load_fingerprints():
        for port in fp.ports:
            seen.setdefault(port, None)
    return tuple(seen)


def parse_ports(text: str | None) -> tuple[int, ...]:
    """`11434,8000-8010,ai` → ordered unique ports. None or empty → the default (11434)."""
    if text is None or not text.strip():
        return DEFAULT_PORTS
    out: dict[int, None] = {}
    for raw in text.split(","):
        part = raw.strip().lower()
        if not part:
            continue
        if part == "ai":
            for port in ai_ports():
                out.setdefault(port, None)
            continue
        if part == "default":
            for port in DEFAULT_PORTS:
                out.setdefault(port, None)
            continue
        lo_text, sep, hi_text = part.partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if sep else lo
        except ValueError:
            raise InputError(f"bad port {raw.strip()!r} in --ports (expected N, N-M or 'ai')") from None
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535) or hi < lo:
            raise InputError(f"bad port range {raw.strip()!r} in --ports (ports are 1-65535)")
        for port in range(lo, hi + 1):
            out.setdefault(port, None)
    if not out:
        raise InputError("--ports is empty")
    return tuple(out)
