"""Poisoned chat templates: parse (never render) Jinja and Ollama Go templates, follow the data from the
conversation into the conditions that gate emitted text, fold constants, judge the emitted prose, and
compare with an index of known-good templates. `check` is the entry point."""

from __future__ import annotations

from ollama_guard.verify.templates.detector import MAX_ANALYSED_CHARS, OVERSIZED_CHARS, check
from ollama_guard.verify.templates.judge import Evidence, Verdict

__all__ = ["MAX_ANALYSED_CHARS", "OVERSIZED_CHARS", "Evidence", "Verdict", "check"]
