"""Which lines are Ollama's own log output at all — to tell an Ollama log from anything else.

``investigate`` reads whatever it is given; a text file, a binary or an empty journal must not be
reported as "no findings". A line is *recognised* when it is a well-formed gin access line, a line the
parser turns into an event (server config, listening, transfer, crash and its stack trace), or one of
the other shapes Ollama's server writes (matched here):

* ``log/slog`` text lines: ``time=2024-12-15T01:34:58.907+09:00 level=INFO source=server.go:376 msg=…``;
* Go ``log`` lines of older releases: ``2024/05/01 10:00:00 routes.go:1008: INFO …``;
* the model runner's llama.cpp / ggml output: ``llama_model_loader: …``, ``llm_load_print_meta: …``,
  ``ggml_cuda_init: …`` and its ``  Device 0: …`` lines, ``load_tensors: …``, ``print_info: …``,
  ``key clip.vision.… not found in file``, the old runner's ``INFO [main] …`` and JSON status lines;
* gin's start-up ``[GIN-debug] …`` lines and the key generation lines of a first start.

each possibly behind a log collector's prefix (journald short / short-iso, ``docker logs -t``, Docker
Desktop). Examples from Ollama issues #8098, #10146, #7477, #6637, #4216.

The one pattern is compiled for ``str`` (the line parser) and for ``bytes`` (the fast scanner, which
counts the lines it never hands to the parser). It is ASCII-only, without ``\\d``/``\\w``/``\\s`` or ``.``
and with no bounded repetition of a class that admits non-ASCII characters, so a line matches as text
exactly when its UTF-8 bytes match: both scan paths count the same lines.
"""

from __future__ import annotations

import re

_TS = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_CLOCK = r"[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
_ZONE = r"(?:Z|[+-][0-9]{2}:?[0-9]{2})"
_UNIT = r"[^ :\[\n]+(?:\[[0-9]+\])?: "  # journald's "host ollama[17408]: " after the host
_PREFIXES = (
    # journald short: any month names ("Aug", "janv.", "1月", " 9月"), with or without the host
    rf" ?(?:[^ 0-9\n]+|[0-9][0-9]?[^ 0-9\n]+) {{1,2}}[0-9]{{1,2}} {_CLOCK} (?:[^ :\n]+ )?{_UNIT}",
    rf"{_TS}T{_CLOCK}{_ZONE} [^ \n]+ {_UNIT}",  # journald short-iso
    rf"{_TS}T{_CLOCK}{_ZONE} ",  # docker logs -t, and journald JSON as investigate renders it
    rf"{_TS} [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}} ",  # Docker Desktop's log view
)
_RUNNER_FUNCTIONS = (
    "load_tensors", "print_info", "load", "init_tokenizer", "alloc_compute_meta", "graph_reserve",
    "sched_reserve", "main", "srv", "slot", "system_info", "build_info",
)
_BODIES = (
    rf"time={_TS}T[^ \n]* level=[A-Z]+ ",  # log/slog
    r"[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)? [^ \n]+\.go:[0-9]+: ",  # Go log
    r"(?:llama|llm|ggml|gguf|clip|mtmd)[a-z0-9_]*: ",  # llama.cpp / ggml function-prefixed lines
    rf"(?:{'|'.join(_RUNNER_FUNCTIONS)}): ",
    r"  Device [0-9]+: ",  # ggml_cuda_init's device list
    r"key [a-z0-9_.]+ not found in file",
    r"(?:INFO|WARN|ERROR|DEBUG|VERB) \[[A-Za-z0-9_ ]+\] ",  # the old C++ runner's server log
    r'\{"function":"',  # the old runner's JSON status lines
    r"\[GIN-debug\] ",
    r"Couldn't find '[^'\n]*id_ed25519'",
    r"Your new public key is:",
    r"ssh-ed25519 [A-Za-z0-9+/=]+",
)
_BODY = rf"(?:{'|'.join(_BODIES)})"
# the body straight away first (most lines have no collector prefix), then behind prefixes
PATTERN = rf"(?:{_BODY}|(?:{'|'.join(_PREFIXES)})+{_BODY})"

_TEXT = re.compile(PATTERN)
_BYTES = re.compile(PATTERN.encode("ascii"))
# a line after the first: found from its newline (a literal first character makes the search fast)
_BYTES_NEXT_LINE = re.compile(b"\n" + PATTERN.encode("ascii"))


def is_ollama_line(line: str) -> bool:
    """Whether one raw line (collector prefix included, newline excluded) is Ollama log output."""
    return _TEXT.match(line) is not None


def is_ollama_line_bytes(line: bytes | bytearray | memoryview) -> bool:
    return _BYTES.match(line) is not None


def count_ollama_lines(buffer: bytes | bytearray) -> int:
    """How many lines of ``buffer`` (whole lines, ``\\n``-separated) are Ollama log output."""
    first = 1 if _BYTES.match(buffer) is not None else 0
    return first + len(_BYTES_NEXT_LINE.findall(buffer))
