"""Regenerate the benign chat-template corpus (tests/data/templates/benign/) from public repositories.

    python scripts/templates_corpus.py [--mirror owner/name=GITDIR ...] [--out tests/data/templates/benign]

Every template comes from a public git repository at a recorded commit; SOURCES.tsv lists, per file, the
repository, the path inside it, the commit and how the text was extracted. A repository is read from a
local git directory given with --mirror, otherwise it is cloned (blob-less, `git clone --filter=blob:none`)
into a temporary directory. Every version of a file in the repository's history is taken (templates are
revised: Ollama's llama3-instruct has four), and templates whose text is the same after collapsing
whitespace are kept once.

Sources:
  ollama/ollama          template/*.gotmpl (Ollama's library templates, Go), template/index.json and
                         template/testdata/templates.jsonl (the Hugging Face chat templates Ollama maps to
                         them, Jinja), model/renderers/testdata/*.jinja* (recent models' Jinja templates)
  unslothai/unsloth      unsloth/ollama_template_mappers.py (TEMPLATE/SYSTEM/PARAMETER of Modelfiles copied
                         from ollama.com/library), unsloth/chat_templates.py (Jinja constants),
                         studio/backend/assets/chat_templates/*.jinja
  chujiezheng/chat_templates  chat_templates/*.jinja
  ggml-org/llama.cpp     models/templates/*.jinja at LLAMACPP_COMMIT (b11312, the llama.cpp that
                         llama-cpp-python 0.3.36 vendors): the llamacpp/ split, measured before the
                         fixes it led to (docs/verify.md); the rate tests judge it alone or with an index
                         of dev/ only, the shipped known-good index has it (issue 11 asks for it);
                         --llamacpp-dir reads the same files from a directory instead (e.g. vendor/llama.cpp
                         of `pip download --no-binary :all: llama-cpp-python==0.3.36`)
  EXTERNAL (below)       templates of fine-tunes and new families published in small repositories: the
                         external/ split, never in the known-good index, never used to tune the detector
  templates_fresh.py     the fresh/ split: Ollama's newer renderer templates, axolotl's and
                         huggingface.js's copies of publishers' templates; never indexed, measured
                         before any change made for them
The corpus is split deterministically: a file whose name hashes to 0 mod 4 is held out (held_out/), the
rest is the development set (dev/).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from templates_fresh import FRESH_REPOS, OLLAMA_UNTIL, fresh

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "data" / "templates" / "benign"
EOS = "</s>"  # unsloth substitutes the tokenizer's EOS for {__EOS_TOKEN__} when it exports a Modelfile


@dataclass
class Item:
    kind: str  # jinja | go | system | params
    name: str
    text: str
    repo: str
    path: str
    commit: str
    how: str
    split: str | None = None  # None: dev or held_out by hash


def git(gitdir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(gitdir), *args], check=True, capture_output=True, text=True
    ).stdout


def versions(gitdir: Path, pathspec: str, rev: str = "HEAD") -> Iterator[tuple[str, str]]:
    """(commit, path) of every distinct blob matching `pathspec` in the history up to `rev`, newest first."""
    seen: set[str] = set()
    for commit in git(gitdir, "log", "--format=%H", rev, "--", pathspec).split():
        for line in git(gitdir, "ls-tree", "-r", commit, "--", pathspec.split("*")[0]).splitlines():
            meta, path = line.split("\t", 1)
            blob = meta.split()[2]
            if blob in seen or not Path(path).match(pathspec):
                continue
            seen.add(blob)
            yield commit, path


def show(gitdir: Path, commit: str, path: str) -> str:
    return git(gitdir, "show", f"{commit}:{path}")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "x"


def ollama(gitdir: Path) -> Iterator[Item]:
    """Up to OLLAMA_UNTIL (what came later is the fresh split)."""
    repo = "ollama/ollama"
    for commit, path in versions(gitdir, "template/*.gotmpl", OLLAMA_UNTIL):
        yield Item("go", Path(path).stem, show(gitdir, commit, path), repo, path, commit, "file")
    for commit, path in versions(gitdir, "template/index.json", OLLAMA_UNTIL):
        for entry in json.loads(show(gitdir, commit, path)):
            yield Item("jinja", entry["name"], entry["template"], repo, path, commit, f"name={entry['name']}")
    for commit, path in versions(gitdir, "template/testdata/templates.jsonl", OLLAMA_UNTIL):
        for number, line in enumerate(show(gitdir, commit, path).splitlines(), 1):
            for name, template in json.loads(line).items():
                yield Item("jinja", name, template, repo, path, commit, f"line={number}")
    for pattern in ("model/renderers/testdata/*.jinja", "model/renderers/testdata/*.jinja2"):
        for commit, path in versions(gitdir, pattern, OLLAMA_UNTIL):
            name = Path(path).name.split(".")[0].removesuffix("_chat_template")
            yield Item("jinja", name, show(gitdir, commit, path), repo, path, commit, "file")


MODELFILE_TEMPLATE = re.compile(r'^TEMPLATE """(.*?)"""', re.S | re.M)
MODELFILE_SYSTEM = re.compile(r'^SYSTEM """(.*?)"""', re.S | re.M)
MODELFILE_PARAM = re.compile(r"^PARAMETER (\S+) (.+)$", re.M)


def string_constants(source: str) -> Iterator[tuple[str, str]]:
    """Module-level `name = "literal"` assignments of a Python file (parsed, never executed)."""
    try:
        body = ast.parse(source).body
    except SyntaxError:  # a few historical versions of unsloth's files do not parse; skip them
        return
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                yield node.targets[0].id, value.value


def unsloth(gitdir: Path) -> Iterator[Item]:
    repo = "unslothai/unsloth"
    for commit, path in versions(gitdir, "unsloth/ollama_template_mappers.py"):
        for name, value in string_constants(show(gitdir, commit, path)):
            if not name.endswith("_ollama"):
                continue
            value = value.replace("{__EOS_TOKEN__}", EOS)
            base = name.removesuffix("_ollama")
            if found := MODELFILE_TEMPLATE.search(value):
                yield Item("go", base, found.group(1), repo, path, commit, f"{name} TEMPLATE")
            if found := MODELFILE_SYSTEM.search(value):
                yield Item("system", base, found.group(1), repo, path, commit, f"{name} SYSTEM")
            params: dict[str, list[str]] = {}
            for key, raw in MODELFILE_PARAM.findall(value):
                params.setdefault(key, []).append(raw.strip().strip('"'))
            if params:
                text = json.dumps(params, sort_keys=True)
                yield Item("params", base, text, repo, path, commit, f"{name} PARAMETER")
    for commit, path in versions(gitdir, "unsloth/chat_templates.py"):
        for name, value in string_constants(show(gitdir, commit, path)):
            if (name.endswith("_template") and "{%" in value) or (
                name.endswith("_template") and "{{" in value
            ):
                yield Item("jinja", name.removesuffix("_template"), value, repo, path, commit, name)
    for commit, path in versions(gitdir, "studio/backend/assets/chat_templates/*.jinja"):
        yield Item("jinja", Path(path).stem, show(gitdir, commit, path), repo, path, commit, "file")


def chujiezheng(gitdir: Path) -> Iterator[Item]:
    repo = "chujiezheng/chat_templates"
    for commit, path in versions(gitdir, "chat_templates/*.jinja"):
        yield Item("jinja", Path(path).stem, show(gitdir, commit, path), repo, path, commit, "file")


# Templates published by model authors and users (fine-tunes, fixes, new families) in small repositories:
# never indexed, never looked at while tuning the detector; the "external" held-out split.
EXTERNAL = (
    "iintothewind/agentic_chat_templates", "HarryMayne/qwen_3_chat_templates", "forcepusher/gemma4_jinja",
    "Butanium/chat_templates_tools", "EchoCog/gpt-oss-20b", "pgadet-wq/granite-docling-258M",
    "HwwwwwwwH/MiniCPM-V-2", "Vedika-advanced-AI/Vedika-4.1-flash", "RkFeeder/LG-AI-Research",
    "Evilcarbon/DeepSeek-R1-Distill-Qwen-32B", "kpratik41/gpt-oss-ckpt", "0su0su0/BORA-1.1B-A0.4B",
    "HuengchI/Atom-7B", "DEVELOPERYUMIN/GeM2-14B-Korean-RAG-QLoRA", "CogniX-LTD/Cogni-OpenModel",
    "Danvin-44/FS8B-finetuned",
)  # fmt: skip


def external(gitdir: Path, repo: str) -> Iterator[Item]:
    """*.jinja files and the chat_template of tokenizer_config.json files at the newest commit."""
    commit = git(gitdir, "rev-parse", "HEAD").strip()
    for path in git(gitdir, "ls-tree", "-r", "--name-only", commit).splitlines():
        name = slug(repo.split("/")[1] + "-" + path.replace("/", "-").rsplit(".", 1)[0])
        if path.endswith((".jinja", ".jinja2")):
            yield Item("jinja", name, show(gitdir, commit, path), repo, path, commit, "file", "external")
        elif path.endswith("tokenizer_config.json"):
            try:
                template = json.loads(show(gitdir, commit, path)).get("chat_template")
            except ValueError:
                continue
            if isinstance(template, str):
                yield Item("jinja", name, template, repo, path, commit, "chat_template", "external")
            elif isinstance(template, list):
                for entry in template:
                    if isinstance(entry, dict) and isinstance(entry.get("template"), str):
                        label = entry.get("name")
                        text = entry["template"]
                        how = f"chat_template name={label}"
                        yield Item("jinja", f"{name}-{label}", text, repo, path, commit, how, "external")


# llama.cpp's test templates (the chat templates of the model families it supports, as their publishers
# ship them): a split of their own, measured by the tree analysis alone (and with a dev-only index).
LLAMACPP = "ggml-org/llama.cpp"
LLAMACPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"


def llamacpp(gitdir: Path | None, directory: Path | None = None) -> Iterator[Item]:
    """models/templates/*.jinja at LLAMACPP_COMMIT, from the git directory or a checkout of that commit."""
    if directory is not None:
        found = (directory / "models" / "templates").glob("*.jinja")
        paths = sorted(p.relative_to(directory).as_posix() for p in found)
    else:
        assert gitdir is not None
        listing = git(gitdir, "ls-tree", "-r", "--name-only", LLAMACPP_COMMIT, "--", "models/templates/")
        paths = sorted(p for p in listing.splitlines() if p.endswith(".jinja"))
    for path in paths:
        text = (directory / path).read_text("utf-8") if directory else show(gitdir, LLAMACPP_COMMIT, path)
        yield Item("jinja", Path(path).stem, text, LLAMACPP, path, LLAMACPP_COMMIT, "file", "llamacpp")


COLLECTORS = {
    "ollama/ollama": ollama,
    "unslothai/unsloth": unsloth,
    "chujiezheng/chat_templates": chujiezheng,
}
EXT = {"jinja": "jinja", "go": "gotmpl", "system": "txt", "params": "json"}


def held_out(name: str) -> bool:
    return hashlib.sha256(name.encode()).digest()[0] % 4 == 0


def gitdir_for(repo: str, mirrors: dict[str, Path], tmp: Path) -> Path:
    if repo in mirrors:
        return mirrors[repo]
    target = tmp / repo.replace("/", "+")
    subprocess.run(
        ["git", "clone", "--bare", "--filter=blob:none", f"https://github.com/{repo}", str(target)],
        check=True,
    )
    return target


def parses(item: Item) -> bool:
    """Jinja templates must parse with Jinja2 (what transformers renders them with): unsloth's Python-format
    skeletons (`{system_message}` filled in later) and templates for other engines are left out."""
    if item.kind != "jinja":
        return True
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if ".Prompt" in item.text or ".Messages" in item.text:
        return False
    env = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do"])
    try:
        env.parse(item.text)
    except Exception:
        return False
    return True


def write(items: list[Item], out: Path, keep: list[str] | None = None) -> int:
    """Writes the items' files and SOURCES.tsv; `keep`: rows of SOURCES.tsv whose files stay as they are
    (and whose texts count as seen, so a duplicate of one of them is dropped)."""
    seen: set[str] = set()
    rows = ["file\trepo\tpath\tcommit\thow", *(keep or [])]
    names: set[str] = set()
    for row in keep or []:
        rel = row.split("\t")[0]
        kind = next(k for k, e in EXT.items() if rel.endswith("." + e))
        seen.add(kind + "\0" + " ".join((out / rel).read_text("utf-8").split()))
        names.add(rel)
    for item in items:
        key = item.kind + "\0" + " ".join(item.text.split())
        if not item.text.strip() or key in seen or not parses(item):
            continue
        seen.add(key)
        digest = hashlib.sha256(item.text.encode()).hexdigest()[:8]
        stem = f"{slug(item.repo.split('/')[0])}-{slug(item.name)}-{digest}"
        split = item.split or ("held_out" if held_out(stem) else "dev")
        rel = f"{split}/{item.kind}/{stem}.{EXT[item.kind]}"
        if rel in names:
            continue
        names.add(rel)
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item.text, encoding="utf-8")
        rows.append("\t".join((rel, item.repo, item.path, item.commit, item.how)))
    (out / "SOURCES.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(rows) - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", action="append", default=[], help="owner/name=GITDIR (a bare git dir)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--llamacpp-dir", type=Path, help="llama.cpp tree at LLAMACPP_COMMIT")
    parser.add_argument(
        "--only-fresh", action="store_true", help="regenerate fresh/ only, keep the rest"
    )
    args = parser.parse_args(argv)
    mirrors = {}
    for spec in args.mirror:
        repo, _, path = spec.partition("=")
        mirrors[repo] = Path(path)
    if args.only_fresh:
        rows = (args.out / "SOURCES.tsv").read_text("utf-8").splitlines()[1:]
        with tempfile.TemporaryDirectory() as tmp:
            gitdirs = {repo: gitdir_for(repo, mirrors, Path(tmp)) for repo in FRESH_REPOS}
            items = [Item("jinja", *found, "fresh") for found in fresh(gitdirs)]
            for old in (args.out / "fresh").glob("*/*"):
                old.unlink()
            count = write(items, args.out, [r for r in rows if not r.startswith("fresh/")])
        print(f"{count} files listed in {args.out / 'SOURCES.tsv'}", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        items: list[Item] = []
        for repo, collect in COLLECTORS.items():
            items += collect(gitdir_for(repo, mirrors, Path(tmp)))
        for repo in EXTERNAL:
            items += external(gitdir_for(repo, mirrors, Path(tmp)), repo)
        if args.llamacpp_dir is not None:
            items += llamacpp(None, args.llamacpp_dir)
        else:
            items += llamacpp(gitdir_for(LLAMACPP, mirrors, Path(tmp)))
        gitdirs = {repo: gitdir_for(repo, mirrors, Path(tmp)) for repo in FRESH_REPOS}
        items += [Item("jinja", *found, "fresh") for found in fresh(gitdirs)]
    for sub in ("dev", "held_out", "external", "llamacpp", "fresh"):
        for old in (args.out / sub).glob("*/*"):
            old.unlink()
    count = write(items, args.out)
    print(f"{count} files written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
