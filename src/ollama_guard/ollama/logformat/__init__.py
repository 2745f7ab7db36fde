"""What Ollama's server log looks like, and how to read each kind of line.

Ollama writes to stderr (journald, `docker logs`, ``~/.ollama/logs/server.log``):

* gin's access line, one per finished request (gin v1.10 ``LoggerWithConfig`` default formatter)::

      [GIN] 2024/08/19 - 14:13:01 | 404 |     414.019µs |       127.0.0.1 | POST     "/api/chat"

  The time is the server's *local* time when the response finished (for streams: the end of the
  stream); the latency is a Go ``time.Duration`` string (``971.777µs``, ``1.19ms``, ``32.77s``,
  ``16m31s``, ``0s``); the client column is gin's ``ClientIP()`` — it believes ``X-Forwarded-For`` /
  ``X-Real-IP`` from any peer, so it can be forged — and may be empty; the path is Go-quoted
  (``%#v``) and carries ``?query``. On a terminal gin adds ANSI colours.
* ``log/slog`` lines: ``time=… level=INFO source=routes.go:1123 msg="server config" env="map[…]"``
  (older releases: ``2024/05/01 10:00:00 routes.go:1008: INFO server config env="map[…]"``),
  ``Listening on 127.0.0.1:11434 (version 0.3.5)``, ``downloading <hex> in N <size> part(s)`` and
  ``uploading …`` for registry transfers.
* Go crash output: ``panic: …``, ``fatal error: …``, ``[signal SIGSEGV: …]``, ``goroutine N [running]:``
  and stack frames.

Each line may carry a prefix added by whatever collected it: journald's short format
(``janv. 20 23:15:37 host ollama[1232]: `` — month names are localised), ``docker logs -t``
(RFC 3339 with nanoseconds), Docker Desktop's ``2024-08-27 19:10:09 ``.

One module per kind: ``prefixes`` (collector prefixes, ANSI colours), ``times`` (RFC 3339, ``--tz``),
``golang`` (Go durations and string literals), ``gin`` (access lines), ``applines`` (slog / Go ``log``
lines: server config, listening, transfers) and ``crashes`` (panics, fatal errors, stack frames).
"""

from ollama_guard.ollama.logformat.applines import (
    Transfer,
    app_line_time,
    parse_env_map,
    parse_list_value,
    parse_listening,
    parse_transfer,
    server_config,
    server_config_env,
    slog_fields,
)
from ollama_guard.ollama.logformat.crashes import crash_kind, stack_frames
from ollama_guard.ollama.logformat.gin import (
    GIN_MARKER,
    GinFields,
    GinLine,
    format_gin,
    gin_time,
    parse_gin,
    parse_gin_fields,
)
from ollama_guard.ollama.logformat.golang import DURATION_RE, go_quote, go_unquote, parse_go_duration
from ollama_guard.ollama.logformat.prefixes import ANSI_RE, PREFIX_RE, split_prefix, strip_ansi
from ollama_guard.ollama.logformat.times import parse_rfc3339, parse_tz

__all__ = [
    "ANSI_RE",
    "DURATION_RE",
    "GIN_MARKER",
    "PREFIX_RE",
    "GinFields",
    "GinLine",
    "Transfer",
    "app_line_time",
    "crash_kind",
    "format_gin",
    "gin_time",
    "go_quote",
    "go_unquote",
    "parse_env_map",
    "parse_gin",
    "parse_gin_fields",
    "parse_go_duration",
    "parse_list_value",
    "parse_listening",
    "parse_rfc3339",
    "parse_transfer",
    "parse_tz",
    "server_config",
    "server_config_env",
    "slog_fields",
    "split_prefix",
    "stack_frames",
    "strip_ansi",
]
