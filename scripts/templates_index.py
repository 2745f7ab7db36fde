"""Rebuild the known-good chat-template index shipped with verify
(src/ollama_guard/verify/templates/known_templates.json.gz) from the real-template corpus.

    python scripts/templates_corpus.py --mirror …    # first, to refresh the corpus from its sources
    python scripts/templates_index.py [--benign tests/data/templates/benign]

Every Jinja and Go template of the dev, held_out and llamacpp splits is an entry (the external and fresh
splits stay out: they test how the detector does on templates it has never seen): its family (the file name
without the source prefix and hash), its source (repository:path@commit from SOURCES.tsv) and its text.
The output is deterministic (sorted, gzip without a timestamp).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from ollama_guard.verify.templates.known import INDEX_FILE, Entry, to_json  # noqa: E402

BENIGN = REPO / "tests" / "data" / "templates" / "benign"
OUT = REPO / "src" / "ollama_guard" / "verify" / "templates" / INDEX_FILE
KINDS = {".jinja": "jinja", ".gotmpl": "go"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benign", type=Path, default=BENIGN)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sources = {}
    for row in (args.benign / "SOURCES.tsv").read_text("utf-8").splitlines()[1:]:
        file, repo, path, commit, _how = row.split("\t")
        sources[file] = f"{repo}:{path}@{commit[:12]}"
    entries = []
    for rel, source in sorted(sources.items()):
        kind = KINDS.get(Path(rel).suffix)
        if kind is None or rel.startswith(("external/", "fresh/")):  # test sets stay unknown to it
            continue
        stem = Path(rel).stem
        family = re.sub(r"^[^-]+-|-[0-9a-f]{8}$", "", stem)
        entries.append(Entry(family, kind, source, (args.benign / rel).read_text("utf-8")))
    args.out.write_bytes(to_json(entries))
    size = args.out.stat().st_size
    print(f"{len(entries)} templates indexed in {args.out} ({size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
