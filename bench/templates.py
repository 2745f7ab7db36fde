"""Benchmark the chat-template detector against the regex detector it replaced (not a test).

    python bench/templates.py [--rounds 3]

On the corpora in tests/data/templates/ (real templates and poisoned variants, development and held-out
splits), in the same run: time per template (best of `rounds`, then median / p95 / max over templates)
and detection rates — real templates flagged at all (low or above) / at high, poisoned variants caught at
medium+ / high+, precision at high — for the data-flow detector (`verify.templates.check`) on its own and
with a known-good index of the development split only (held-out templates are unknown to it), and for
the regex detector verify used before (bench/baseline/template_regex.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    real = [s for s in benign() if s.kind in ("jinja", "go")]
    bad = list(poisoned())
    print(f"corpus: {len(real)} real templates, {len(bad)} poisoned variants")
    print("| split | detector | real flagged | real high | caught medium+ | caught high+ | precision@high |")
    print("|---|---|---|---|---|---|---|")
    timing: dict[str, list[float]] = {}
    index = dev_index()
    for split in ("dev", "held_out", "external", "all"):
        r = [s for s in real if split in ("all", s.split)]
        p = [v for v in bad if split in ("all", v.split)]
        detectors = (("data-flow alone", new_detector), ("data-flow + index of dev split", with_index(index)),
                     ("regex (old)", old_detector))  # fmt: skip
        for label, detect in detectors:
            r_ranks, r_times = measure(detect, r, args.rounds)
            p_ranks, _ = measure(detect, p, 1)
            if split == "all":
                timing[label] = r_times
            if not p_ranks:  # the external split has real templates only
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
