"""The chat-template corpora (tests/data/templates/): real templates and poisoned variants, and renderers
that execute them the way the runtimes do (Jinja2's immutable sandbox as transformers/llama-cpp-python
use it; Go's text/template with Ollama's function names) for the proof tests."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data" / "templates"
BENIGN = DATA / "benign"
POISONED = DATA / "poisoned"
RENDERER = Path(__file__).resolve().parent.parent / "templates_render"
KINDS = {".jinja": "jinja", ".gotmpl": "go", ".txt": "system"}


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str
    split: str
    text: str


@dataclass(frozen=True)
class Variant:
    id: str
    kind: str
    style: str
    split: str
    text: str
    payload: str
    expect: str
    trigger: dict[str, Any]
    clean: dict[str, Any] | None


@lru_cache(maxsize=1)
def benign() -> tuple[Sample, ...]:
    out = []
    for path in sorted(BENIGN.glob("*/*/*")):
        kind = KINDS.get(path.suffix)
        if kind is not None:
            out.append(Sample(path.name, kind, path.parent.parent.name, path.read_text("utf-8")))
    return tuple(out)


def pad(text: str, kind: str, chars: int) -> str:
    """A comment of `chars` characters in front: the payload then lies past the first MiB."""
    if not chars:
        return text
    filler = ("lorem ipsum dolor sit amet " * (chars // 27 + 1))[:chars]
    return ("{#" + filler + "#}" if kind == "jinja" else "{{/*" + filler + "*/}}") + text


@lru_cache(maxsize=1)
def poisoned() -> tuple[Variant, ...]:
    out = []
    for item in json.loads((POISONED / "manifest.json").read_text("utf-8")):
        text = pad((POISONED / item["file"]).read_text("utf-8"), item["kind"], item["pad_chars"])
        out.append(Variant(item["id"], item["kind"], item["style"], item["split"], text, item["payload"],
                           item["expect"], item["trigger"], item["clean"]))  # fmt: skip
    return tuple(out)


def render_jinja(template: str, case: dict[str, Any], *, sandbox: bool = True, strict: bool = False) -> str:
    """Renders like transformers' apply_chat_template (ImmutableSandboxedEnvironment, trim/lstrip blocks).
    `sandbox=False` is what llama-cpp-python did before CVE-2024-34359 was fixed."""
    from jinja2 import Environment, StrictUndefined, Undefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    when = date.fromisoformat(case.get("date", "2025-03-01"))
    factory = ImmutableSandboxedEnvironment if sandbox else Environment
    env = factory(trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined if strict else Undefined,
                  extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do"])  # fmt: skip
    env.globals.update(raise_exception=raise_exception, strftime_now=when.strftime)
    return env.from_string(template).render(
        messages=case["messages"], tools=case.get("tools"), add_generation_prompt=True,
        bos_token="<s>", eos_token="</s>",
    )  # fmt: skip


@lru_cache(maxsize=1)
def go_renderer(build_dir: str) -> Path:
    """Builds tests/templates_render once per source version (Go's own text/template, Ollama's FuncMap)."""
    go = shutil.which("go")
    if go is None:
        raise FileNotFoundError("go")
    source = (RENDERER / "main.go").read_bytes()
    out = Path(build_dir) / f"render-{hashlib.sha256(source).hexdigest()[:12]}"
    if not out.exists():
        subprocess.run([go, "build", "-o", str(out), "."], cwd=RENDERER, check=True, capture_output=True,
                       env={"GOFLAGS": "-mod=mod", "GOCACHE": str(Path(build_dir) / "gocache"),
                            "HOME": build_dir, "PATH": str(Path(go).parent)})  # fmt: skip
    return out


def render_go(binary: Path, cases: list[tuple[str, dict[str, Any]]]) -> list[dict[str, str]]:
    payload = [{"template": t, "messages": c["messages"], "tools": c.get("tools") or [],
                "date": c.get("date", "2025-03-01")} for t, c in cases]  # fmt: skip
    done = subprocess.run([str(binary)], input=json.dumps(payload).encode(), capture_output=True, check=True)
    return json.loads(done.stdout)
