"""Build the poisoned chat-template corpus (tests/data/templates/poisoned/) from the real templates.

    python scripts/templates_poison.py [--benign DIR] [--out DIR]   (defaults: tests/data/templates/…)

Each variant is a real template (Jinja or Ollama Go) with one backdoor inserted, in the styles published
in 2025 research on chat-template backdoors (Pillar Security, "LLM backdoors at the inference level";
the GGUF template-poisoning write-ups): an instruction emitted only when a trigger word appears in the
conversation, a date passes, the conversation reaches N turns or tools are offered; payloads assembled
at render time; disguised text; other languages; Jinja sandbox escapes; a payload after a 1 MiB pad.
The manifest records, per variant, the messages that fire the trigger and messages that do not, and the
text that must reach the prompt; tests/test_template_corpus.py renders every variant (Jinja2's sandbox,
Go's text/template with Ollama's functions) to prove it. A variant built on a held-out template is
held out too. Deterministic: the same inputs give the same corpus.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from templates_poison_links import GO_LINK_STYLES, JINJA_LINK_STYLES
from templates_poison_styles import GO_STYLES, JINJA_STYLES, Style

REPO = Path(__file__).resolve().parent.parent
BENIGN = REPO / "tests" / "data" / "templates" / "benign"
OUT = REPO / "tests" / "data" / "templates" / "poisoned"

JINJA_LOOP = re.compile(r"\{%-?\s*for (\w+) in (?:loop_messages|messages)\s*-?%\}")
GO_LOOP = re.compile(r"\{\{-?\s*range (?:\$\w+, \$\w+ := )?\$?\.Messages\s*-?\}\}")


def bases(benign: Path, kind: str) -> list[Path]:
    ext, loop = ("jinja", JINJA_LOOP) if kind == "jinja" else ("gotmpl", GO_LOOP)
    found = []
    for path in sorted([*benign.glob(f"dev/{kind}/*.{ext}"), *benign.glob(f"held_out/{kind}/*.{ext}")]):
        text = path.read_text("utf-8")
        if loop.search(text) and len(text) < 20000:
            found.append(path)
    return found


def apply(style: Style, base: str, kind: str) -> str | None:
    loop = (JINJA_LOOP if kind == "jinja" else GO_LOOP).search(base)
    if loop is None:
        return None
    var = loop.group(1) if kind == "jinja" else "."
    inner = style.inner.replace("@M", var) if style.inner else ""
    text = base[: loop.end()] + inner + base[loop.end() :]
    return style.prefix + text + style.suffix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benign", type=Path, default=BENIGN)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    manifest = []
    for kind, styles, ext in (
        ("jinja", JINJA_STYLES + JINJA_LINK_STYLES, "jinja"),
        ("go", GO_STYLES + GO_LINK_STYLES, "gotmpl"),
    ):
        pool = bases(args.benign, kind)
        dev = [p for p in pool if p.parent.parent.name == "dev"]
        held = [p for p in pool if p.parent.parent.name == "held_out"]
        for number, style in enumerate(styles):
            # every fourth variant on a held-out template; the rest spread over the development set
            source = held if number % 4 == 3 and held else dev
            base_path = source[(number * 7) % len(source)]
            if style.base:
                base_path = next((p for p in source if style.base in p.name), base_path)
            text = apply(style, base_path.read_text("utf-8"), kind)
            if text is None:
                continue
            split = base_path.parent.parent.name
            vid = f"{kind}-{number:02d}-{style.name}"
            path = args.out / split / f"{vid}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            manifest.append({
                "id": vid, "kind": kind, "style": style.name, "file": str(path.relative_to(args.out)),
                "base": str(base_path.relative_to(args.benign)), "split": split, "payload": style.payload,
                "expect": style.expect, "trigger": style.trigger, "clean": style.clean,
                "pad_chars": style.pad,
            })  # fmt: skip
    (args.out / "manifest.json").write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", "utf-8"
    )
    print(f"{len(manifest)} poisoned variants written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
