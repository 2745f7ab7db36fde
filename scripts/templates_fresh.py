"""The "fresh" split of the real-template corpus (see templates_corpus.py): real chat templates collected
after the detector was tuned, measured before any change made for them (docs/verify.md has the figures).

  ollama/ollama          model/renderers/testdata/*.jinja* at FRESH_OLLAMA, newer than the commit the dev
                         and held_out splits stop at (OLLAMA_UNTIL): new families' templates
  axolotl-ai-cloud/axolotl  src/axolotl/utils/chat_templates/templates/*.jinja at AXOLOTL: the publishers'
                         templates a fine-tuning framework ships (aya, command-a, exaone, falcon-h1,
                         jamba, nemotron-h, phi, pixtral, qwen3.5, …)
  huggingface/huggingface.js  packages/jinja/test/e2e.test.js at HFJS: the tokenizer_config.json chat
                         templates of Hugging Face models its Jinja engine is tested on, each under the
                         model's name (JavaScript string literals, unescaped here)

Duplicates of templates already in the corpus are dropped by templates_corpus.write (first one wins), so
only templates new to the corpus land here."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

Found = tuple[str, str, str, str, str, str]  # name, text, repo, path, commit, how (all Jinja)

OLLAMA_UNTIL = "551279752729ac9d4725c8749f429f5a424eaaf8"  # the dev/held_out splits' newest Ollama commit
FRESH_OLLAMA = "fb30760996871fa9460115c753afd2c60d4ab0f7"
AXOLOTL = "067b021c8b87a9e5e380b9173c704cf7340e30f5"
HFJS = "fe42e68017ffc76d09922ea8f9b38a6964345710"
HFJS_PATH = "packages/jinja/test/e2e.test.js"
FRESH_REPOS = ("ollama/ollama", "axolotl-ai-cloud/axolotl", "huggingface/huggingface.js")

_JS_ENTRY = re.compile(
    r'^\t"([^"\n]+)":\s*\{\s*\n\s*chat_template:\s*(`(?:[^`\\]|\\.)*`|"(?:[^"\\]|\\.)*")', re.M | re.S
)
_JS_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def js_string(literal: str) -> str:
    """The value of a JavaScript string or template literal (no `${}` interpolation)."""
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "u" and body[i + 2] == "{":
            end = body.index("}", i)
            out.append(chr(int(body[i + 3 : end], 16)))
            i = end + 1
        elif nxt == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif nxt == "x":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        elif nxt == "\n":  # a line continuation
            i += 2
        else:
            out.append(_JS_SIMPLE.get(nxt, nxt))
            i += 2
    return "".join(out)


def git(gitdir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(gitdir), *args], check=True, capture_output=True, text=True
    ).stdout


def show(gitdir: Path, commit: str, path: str) -> str:
    return git(gitdir, "show", f"{commit}:{path}")


def fresh(gitdirs: dict[str, Path]) -> Iterator[Found]:
    """Every template of the fresh sources, in a fixed order."""
    ollama = gitdirs["ollama/ollama"]
    listing = git(ollama, "ls-tree", "-r", "--name-only", FRESH_OLLAMA, "--", "model/renderers/testdata/")
    for path in sorted(p for p in listing.splitlines() if p.endswith((".jinja", ".jinja2"))):
        name = Path(path).name.split(".")[0].removesuffix("_chat_template")
        text = show(ollama, FRESH_OLLAMA, path)
        yield name, text, "ollama/ollama", path, FRESH_OLLAMA, "file"
    axolotl = gitdirs["axolotl-ai-cloud/axolotl"]
    folder = "src/axolotl/utils/chat_templates/templates/"
    for path in sorted(git(axolotl, "ls-tree", "-r", "--name-only", AXOLOTL, "--", folder).splitlines()):
        if path.endswith(".jinja"):
            text = show(axolotl, AXOLOTL, path)
            yield Path(path).stem, text, "axolotl-ai-cloud/axolotl", path, AXOLOTL, "file"
    source = show(gitdirs["huggingface/huggingface.js"], HFJS, HFJS_PATH)
    for match in _JS_ENTRY.finditer(source):
        model, literal = match.group(1), match.group(2)
        if "${" in literal:
            continue
        name = model.split(" (")[0].replace("/", "-")
        yield name, js_string(literal), "huggingface/huggingface.js", HFJS_PATH, HFJS, f"key={model}"
