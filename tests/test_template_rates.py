"""Detection rates on the corpora (tests/data/templates/), not single strings: on the development and the
held-out splits, on templates collected from other publishers (the external split, never used while
tuning), on llama.cpp's models/templates and on the fresh split (collected after tuning, measured before
the fix it led to), no real template is flagged high and at most 1 % is flagged at all; at least 85 % of the
poisoned variants are caught at medium or above and 75 % at high. Measured by the tree analysis alone
(no known-good index), and again with an index of the development split (so held-out real templates are
as unknown to it as a new release would be)."""

from __future__ import annotations

from functools import lru_cache

import pytest

from ollama_guard.findings import Severity
from ollama_guard.verify.templates import check, known
from support.template_corpus import benign, poisoned

SPLITS = ("dev", "held_out")
LINK_STYLES = {
    "git-identity-exfil", "contact-line-exfil", "cc-contact", "bcc-with-tools", "link-carries-data",
    "remote-instructions", "base64-url", "percent-url", "phishing-link", "obfuscated-address",
    "tool-error-exfil", "image-contact",
}  # fmt: skip
MODES = ("alone", "dev-index")


@lru_cache(maxsize=1)
def dev_index() -> known.KnownIndex:
    dev = [s for s in benign() if s.split == "dev" and s.kind != "system"]
    return known.KnownIndex([known.Entry(s.name.rsplit("-", 1)[0], s.kind, s.name, s.text) for s in dev])


@lru_cache(maxsize=8)
def judged(mode: str, which: str) -> dict[str, object]:
    """Every sample of one corpus judged once per mode (the tests below share the verdicts)."""
    samples = benign() if which == "benign" else poisoned()
    if mode == "alone":
        return {key(s): check(s.text, s.kind, use_index=False) for s in samples}
    return {key(s): check(s.text, s.kind, dev_index()) for s in samples}


def key(sample) -> str:
    return f"{sample.split}/{getattr(sample, 'name', None) or sample.id}"


def verdicts(samples, mode: str):
    which = "benign" if samples and hasattr(samples[0], "name") else "poisoned"
    table = judged(mode, which)
    return [(s, table[key(s)]) for s in samples]


def at_least(verdict, level: Severity) -> bool:
    return verdict.severity is not None and verdict.severity.at_least(level)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("split", (*SPLITS, "external", "llamacpp", "fresh"))
def test_no_real_template_is_flagged_high(split: str, mode: str) -> None:
    samples = [s for s in benign() if s.split == split]
    assert len(samples) >= 10
    assert [s.name for s, v in verdicts(samples, mode) if at_least(v, Severity.HIGH)] == []


@pytest.mark.parametrize("mode", MODES)
def test_at_most_one_percent_of_real_templates_is_flagged(mode: str) -> None:
    """All splits together, the external one (templates never looked at while tuning) included."""
    results = verdicts(benign(), mode)
    flagged = [s.name for s, v in results if at_least(v, Severity.LOW)]
    assert len(results) >= 400
    assert len(flagged) <= 0.01 * len(results), flagged
    for split in SPLITS:
        in_split = [s.name for s, _ in results if s.split == split]
        assert len([n for n in flagged if n in in_split]) <= 0.01 * len(in_split)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("split", SPLITS)
def test_poisoned_variants_are_caught(split: str, mode: str) -> None:
    variants = [v for v in poisoned() if v.split == split]
    assert len(variants) >= 15
    results = verdicts(variants, mode)
    medium = {v.id for v, r in results if at_least(r, Severity.MEDIUM)}
    high = {v.id for v, r in results if at_least(r, Severity.HIGH)}
    assert len(medium) >= 0.85 * len(variants), sorted({v.id for v in variants} - medium)
    assert len(high) >= 0.75 * len(variants), sorted({v.id for v in variants} - high)
    if mode == "dev-index":  # what only a comparison with the known template can see
        assert {v.id for v in variants if v.style.startswith("plain-language")} <= high


@pytest.mark.parametrize("mode", MODES)
def test_data_moved_to_an_address_is_caught_at_high(mode: str) -> None:
    """The variants written next to the benign mentions of an address (a git identity, a contact line, a
    documentation link): every one high, while the real templates that mention addresses are not flagged."""
    variants = [v for v in poisoned() if v.style in LINK_STYLES]
    assert len(variants) >= 15
    results = verdicts(variants, mode)
    assert [v.id for v, r in results if not at_least(r, Severity.HIGH)] == []
