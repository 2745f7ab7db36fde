"""Detection rates on the corpora (tests/data/templates/), not single strings: on the development and the
held-out splits, no real template is flagged high and at most 1 % is flagged at all; at least 85 % of the
poisoned variants are caught at medium or above and 75 % at high. Measured by the tree analysis alone
(no known-good index), and again with the index."""

from __future__ import annotations

import pytest

from ollama_guard.findings import Severity
from ollama_guard.verify.templates import check
from support.template_corpus import benign, poisoned

SPLITS = ("dev", "held_out")


def verdicts(samples):
    return [(s, check(s.text, s.kind)) for s in samples]


@pytest.mark.parametrize("split", SPLITS)
def test_real_templates_are_not_flagged(split: str) -> None:
    samples = [s for s in benign() if s.split == split]
    assert len(samples) >= 40
    results = verdicts(samples)
    high = [s.name for s, v in results if v.severity is not None and v.severity.at_least(Severity.HIGH)]
    flagged = [s.name for s, v in results if v.severity is not None]
    assert high == []
    assert len(flagged) <= 0.01 * len(samples), flagged


@pytest.mark.parametrize("split", SPLITS)
def test_poisoned_variants_are_caught(split: str) -> None:
    variants = [v for v in poisoned() if v.split == split]
    assert len(variants) >= 15
    results = verdicts(variants)
    medium = [v.id for v, r in results if r.severity is not None and r.severity.at_least(Severity.MEDIUM)]
    high = [v.id for v, r in results if r.severity is not None and r.severity.at_least(Severity.HIGH)]
    assert len(medium) >= 0.85 * len(variants), sorted({v.id for v in variants} - set(medium))
    assert len(high) >= 0.75 * len(variants), sorted({v.id for v in variants} - set(high))
