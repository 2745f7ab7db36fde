"""Benchmark the chat-template detector against the regex detector it replaced (not a test).

    python bench/templates.py [--rounds 3] [--store-gb 1.0 [--store-rounds 3]]

On the corpora in tests/data/templates/ (real templates and poisoned variants, development and held-out
splits), in the same run: time per template (best of `rounds`, then median / p95 / max over templates)
and detection rates — real templates flagged at all (low or above) / at high, poisoned variants caught at
medium+ / high+, precision at high — for the data-flow detector (`verify.templates.check`) on its own and
with a known-good index of the development split only (held-out templates are unknown to it), and for
the regex detector verify used before (bench/baseline/template_regex.py).

With --store-gb, also a store of that size in Ollama's layout whose models carry real templates (a GGUF
`tokenizer.chat_template` and an Ollama template layer from the corpus, the largest ones first) is
verified end to end (`ollama-guard verify --format json`) by this tree and by the tree before the
data-flow detector (`git archive BASE src`, run with PYTHONPATH), alternating, warm cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "bench" / "baseline")]

from template_regex import scan_text  # noqa: E402

from ollama_guard.findings import Severity  # noqa: E402
from ollama_guard.verify.templates import check, known  # noqa: E402
from support.template_corpus import benign, poisoned  # noqa: E402

RANK = {s.value: s.rank for s in Severity}


def new_detector(text: str, kind: str) -> int:
    verdict = check(text, kind, use_index=False)  # type: ignore[arg-type]
    return verdict.severity.rank if verdict.severity else -1


def dev_index() -> known.KnownIndex:
    dev = [s for s in benign() if s.split == "dev" and s.kind != "system"]
    return known.KnownIndex([known.Entry(s.name.rsplit("-", 1)[0], s.kind, s.name, s.text) for s in dev])


def with_index(index: known.KnownIndex) -> Callable[[str, str], int]:
    def detect(text: str, kind: str) -> int:
        verdict = check(text, kind, index)  # type: ignore[arg-type]
        return verdict.severity.rank if verdict.severity else -1

    return detect


def old_detector(text: str, kind: str) -> int:
    hits = scan_text(text, kind)  # type: ignore[arg-type]
    return max((RANK[h.pattern.severity] for h in hits), default=-1)


def measure(detect: Callable[[str, str], int], samples: list, rounds: int) -> tuple[list[int], list[float]]:
    ranks, times = [], []
    for sample in samples:
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            rank = detect(sample.text, sample.kind)
            best = min(best, time.perf_counter() - started)
        ranks.append(rank)
        times.append(best)
    return ranks, times


def rates(benign_ranks: list[int], poisoned_ranks: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, level in (("medium", Severity.MEDIUM.rank), ("high", Severity.HIGH.rank)):
        tp = sum(r >= level for r in poisoned_ranks)
        fp = sum(r >= level for r in benign_ranks)
        out[f"recall@{name}"] = tp / len(poisoned_ranks)
        out[f"precision@{name}"] = tp / (tp + fp) if tp + fp else 1.0
        out[f"fp@{name}"] = fp / len(benign_ranks)
    out["flagged"] = sum(r >= Severity.LOW.rank for r in benign_ranks) / len(benign_ranks)
    return out


def gguf_with_template(name: str, template: str) -> bytes:
    def string(s: str) -> bytes:
        data = s.encode()
        return struct.pack("<Q", len(data)) + data

    kvs = string("general.architecture") + struct.pack("<I", 8) + string("llama")
    kvs += string("general.name") + struct.pack("<I", 8) + string(name)
    kvs += string("tokenizer.chat_template") + struct.pack("<I", 8) + string(template)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 3) + kvs


def build_store(root: Path, size_gb: float) -> None:
    """Six models in Ollama's layout: a GGUF (real chat template, random weights) and a real Go template."""
    jinja = sorted(
        (s for s in benign() if s.kind == "jinja" and s.split not in ("external", "llamacpp", "fresh")),
        key=lambda s: -len(s.text),
    )
    go = sorted((s for s in benign() if s.kind == "go"), key=lambda s: -len(s.text))
    blobs = root / "blobs"
    blobs.mkdir(parents=True)
    sizes = [0.45, 0.25, 0.13, 0.09, 0.05, 0.03]

    def put(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{digest}").write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    for number, share in enumerate(sizes):
        name = f"model{number}"
        weights = gguf_with_template(name, jinja[number * 5].text) + os.urandom(int(share * size_gb * 2**30))
        layers = [
            {"mediaType": "application/vnd.ollama.image.model", **put(weights)},
            {"mediaType": "application/vnd.ollama.image.template", **put(go[number * 3].text.encode())},
            {"mediaType": "application/vnd.ollama.image.params", **put(b'{"stop":["<|eot_id|>"]}')},
        ]
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **put(b"{}")},
                    "layers": layers}  # fmt: skip
        path = root / "manifests" / "registry.ollama.ai" / "library" / name / "latest"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(manifest))


def store_bench(size_gb: float, rounds: int, base: str) -> None:
    with tempfile.TemporaryDirectory(dir=REPO / "bench") as tmp:
        root = Path(tmp) / "store"
        build_store(root, size_gb)
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", base, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        runs: dict[str, list[float]] = {"this tree": [], f"before ({base[:12]})": []}
        envs = {
            "this tree": dict(os.environ),
            f"before ({base[:12]})": {**os.environ, "PYTHONPATH": str(old / "src")},
        }
        for number in range(rounds):
            order = list(runs) if number % 2 == 0 else list(reversed(runs))
            for label in order:
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "ollama_guard", "verify", "--format", "json",
                                       "--models-dir", str(root), "--fail-on", "never"], env=envs[label],
                                      capture_output=True)  # fmt: skip
                runs[label].append(time.perf_counter() - started)
                if done.returncode != 0:
                    raise SystemExit(f"verify failed ({label}): {done.stderr.decode()[-300:]}")
        print()
        print(f"| {size_gb:g} GB store, real templates | verify wall median (s) | best | rounds |")
        print("|---|---|---|---|")
        for label, times in runs.items():
            print(f"| {label} | {statistics.median(times):.2f} | {min(times):.2f} | {len(times)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store-gb", type=float, default=0.0)
    parser.add_argument("--store-rounds", type=int, default=3)
    parser.add_argument(
        "--base",
        default="14771aa31172fd97099ab4fdf923664eff065712",
        help="the commit before the data-flow detector (its parent on main)",
    )
    parser.add_argument("--store-only", action="store_true", help="only the store benchmark")
    args = parser.parse_args(argv)
    if args.store_only:
        store_bench(args.store_gb or 1.0, args.store_rounds, args.base)
        return 0
    real = [s for s in benign() if s.kind in ("jinja", "go")]
    bad = list(poisoned())
    print(f"corpus: {len(real)} real templates, {len(bad)} poisoned variants")
    print("| split | detector | real flagged | real high | caught medium+ | caught high+ | precision@high |")
    print("|---|---|---|---|---|---|---|")
    timing: dict[str, list[float]] = {}
    index = dev_index()
    for split in ("dev", "held_out", "external", "llamacpp", "fresh", "all"):
        r = [s for s in real if split in ("all", s.split)]
        p = [v for v in bad if split in ("all", v.split)]
        detectors = (("data-flow alone", new_detector), ("data-flow + index of dev split", with_index(index)),
                     ("regex (old)", old_detector))  # fmt: skip
        for label, detect in detectors:
            r_ranks, r_times = measure(detect, r, args.rounds)
            p_ranks, _ = measure(detect, p, 1)
            if split == "all":
                timing[label] = r_times
            if not p_ranks:  # the external, llamacpp and fresh splits have real templates only
                flagged = sum(r >= Severity.LOW.rank for r in r_ranks) / len(r_ranks)
                high = sum(r >= Severity.HIGH.rank for r in r_ranks) / len(r_ranks)
                print(f"| {split} | {label} | {flagged:.1%} | {high:.1%} | – | – | – |")
                continue
            x = rates(r_ranks, p_ranks)
            print(f"| {split} | {label} | {x['flagged']:.1%} | {x['fp@high']:.1%} | {x['recall@medium']:.1%} "
                  f"| {x['recall@high']:.1%} | {x['precision@high']:.1%} |")  # fmt: skip
    print()
    print("| detector | median ms/template | p95 | max |")
    print("|---|---|---|---|")
    for label, times in timing.items():
        times = sorted(times)
        p95 = times[int(0.95 * (len(times) - 1))]
        median = statistics.median(times) * 1000
        print(f"| {label} | {median:.2f} | {p95 * 1000:.2f} | {times[-1] * 1000:.1f} |")
    if args.store_gb:
        store_bench(args.store_gb, args.store_rounds, args.base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
