"""The corpora are what they claim to be: enough real templates, every poisoned variant really poisons the
prompt (its payload is rendered with its trigger and absent without it), sandbox escapes really are
refused by Jinja2's sandbox, and the sources are recorded."""

from __future__ import annotations

import collections
import re

import pytest
from jinja2.exceptions import SecurityError

from support.template_corpus import BENIGN, benign, go_renderer, poisoned, render_go, render_jinja


def test_benign_corpus_is_large_and_sourced() -> None:
    samples = benign()
    kinds = collections.Counter(s.kind for s in samples)
    assert kinds["jinja"] + kinds["go"] >= 150
    assert kinds["jinja"] >= 100 and kinds["go"] >= 60
    assert {s.split for s in samples} == {"dev", "held_out", "external", "llamacpp", "fresh"}
    rows = (BENIGN / "SOURCES.tsv").read_text("utf-8").splitlines()[1:]
    listed = {row.split("\t")[0].rsplit("/", 1)[-1] for row in rows}
    assert {s.name for s in samples} <= listed
    for row in rows:
        _file, repo, path, commit, _how = row.split("\t")
        assert repo.count("/") == 1 and path and len(commit) == 40


def test_poisoned_corpus_covers_every_style() -> None:
    variants = poisoned()
    assert len(variants) >= 60
    styles = {v.style for v in variants}
    for needed in ("concat-tilde", "join", "reverse", "replace", "format-percent", "escapes", "split-vars",
                   "inline-if", "is-in-test", "lower-find", "slice", "content-var", "word-var", "macro-param",
                   "loop-filter", "padded-word", "time-bomb", "turn-bomb", "tools-present", "plain-language",
                   "comment-in-word", "letter-spacing", "lookalike", "fullwidth", "spanish", "chinese",
                   "sandbox-attr", "sandbox-escapes", "past-1mib", "printf-assembly",
                   "eq-content", "git-identity-exfil", "contact-line-exfil", "cc-contact", "bcc-with-tools",
                   "link-carries-data", "remote-instructions", "base64-url", "percent-url", "phishing-link",
                   "obfuscated-address", "tool-error-exfil", "image-contact"):  # fmt: skip
        assert needed in styles, needed
    assert collections.Counter(v.split for v in variants)["held_out"] >= 15
    assert any(len(v.text) > 1024 * 1024 for v in variants)


JINJA = [v for v in poisoned() if v.kind == "jinja"]


@pytest.mark.parametrize("variant", JINJA, ids=[v.id for v in JINJA])
def test_jinja_variant_renders_its_payload_only_with_its_trigger(variant) -> None:
    if variant.expect == "sandbox":  # reaches Python internals unsandboxed; the sandbox refuses it
        assert re.search(r"<(class|bound method|function) ", render_jinja(variant.text, variant.trigger,
                                                                         sandbox=False))  # fmt: skip
        with pytest.raises(SecurityError):
            render_jinja(variant.text, variant.trigger, strict=True)
        return
    assert variant.payload in render_jinja(variant.text, variant.trigger)
    if variant.clean is not None:
        assert variant.payload not in render_jinja(variant.text, variant.clean)


def test_go_variants_render_their_payload_only_with_their_trigger(tmp_path_factory) -> None:
    try:
        binary = go_renderer(str(tmp_path_factory.getbasetemp()))
    except FileNotFoundError:
        pytest.skip("Go toolchain not installed (CI installs golang-go)")
    variants = [v for v in poisoned() if v.kind == "go"]
    cases = [(v.text, v.trigger) for v in variants] + [(v.text, v.clean) for v in variants if v.clean]
    results = render_go(binary, cases)
    fired, silent = results[: len(variants)], results[len(variants) :]
    for variant, result in zip(variants, fired, strict=True):
        assert not result.get("error"), (variant.id, result)
        assert variant.payload in result["output"], variant.id
    for variant, result in zip([v for v in variants if v.clean], silent, strict=True):
        assert not result.get("error"), (variant.id, result)
        assert variant.payload not in result["output"], variant.id


def test_real_go_templates_render_in_ollamas_dialect(tmp_path_factory) -> None:
    """The Go renderer accepts every real Go template (so the parser written here is checked against Go)."""
    try:
        binary = go_renderer(str(tmp_path_factory.getbasetemp()))
    except FileNotFoundError:
        pytest.skip("Go toolchain not installed (CI installs golang-go)")
    samples = [s for s in benign() if s.kind == "go"]
    results = render_go(
        binary, [(s.text, {"messages": [{"role": "user", "content": "hi"}]}) for s in samples]
    )
    failures = [s.name for s, r in zip(samples, results, strict=True) if r.get("error")]
    assert not failures


# Where this parser is more lenient than Go's (it then analyses a template Ollama would refuse to load:
# harmless) — never the other way round, which would let a template hide its logic from the analysis.
GO_LENIENT = {
    "{{ $undefined }}",
    "{{ 1 | 2 }}",
    "{{ range $k, $v, $w := .Messages }}{{ end }}",
}  # (`else with` is left out: Go 1.23+, which Ollama builds with, accepts it; older Go does not)
GO_CASES = [
    "{{-3}}", "{{- 3}}", "{{ 3 -}}", '{{ "a" | printf "%s" }}', "{{ $x := 1 }}{{ $x = 2 }}{{ $x }}",
    "{{ range $i, $v := .Messages }}{{ $i }}{{ end }}", "{{ with $x := .System }}{{ $x }}{{ end }}",
    '{{ block "x" . }}y{{ end }}', '{{ define "x" }}a{{ end }}{{ template "x" }}', "{{ else }}",
    "{{ if }}{{ end }}", "{{ .A.B.C }}", "{{ (.System).Foo }}", '{{ "\\z" }}', "{{ 'ab' }}", "{{ 'a' }}",
    "{{ `raw\nline` }}", "{{/* a */}}", "{{ /* a */ }}", "{{- /* a */ -}}", "{{-/* a */-}}", "{{ break }}",
    "{{ range .Messages }}{{ break }}{{ end }}", "{{ range .Messages }}{{ continue }}{{ end }}",
    "{{ if .System }}a{{ else if .Prompt }}b{{ else }}c{{ end }}", "{{ if .System }}{{ end }}{{ end }}",
    "{{ .System", "{{ len }}", "{{ printf }}", "{{ nil }}", "{{ .Messages | len }}", "{{ (1) }}", "{{ () }}",
    "{{ $ }}", "{{ $.System }}", "{{ 0x1F }}", "{{ 1e3 }}", "{{ 1_000 }}", '{{ "}}" }}', "{{ if .System }}",
    "{{ end }}", '{{ template "missing" }}', "{{ | .System }}", "{{ eq .A .B .C }}",
    "{{ $x := }}", "{{ := 1 }}", "{{ .System 1 }}", "a {{- /* c */}} b", "{{/* a */ -}} b", "{{ '\\'' }}",
    *GO_LENIENT,
]  # fmt: skip


def test_go_parser_agrees_with_go(tmp_path_factory) -> None:
    """Differential: every template Go parses, this parser parses; what Go refuses, it refuses too
    (except the leniencies listed). Real Go templates of the corpus included."""
    from ollama_guard.verify.templates.go_parser import GoParseError, parse

    try:
        binary = go_renderer(str(tmp_path_factory.getbasetemp()))
    except FileNotFoundError:
        pytest.skip("Go toolchain not installed (CI installs golang-go)")
    cases = (
        GO_CASES
        + [s.text for s in benign() if s.kind == "go"]
        + [v.text for v in poisoned() if v.kind == "go"]
    )
    results = render_go(binary, [(c, {"messages": [{"role": "user", "content": "hi"}]}) for c in cases])
    for case, result in zip(cases, results, strict=True):
        error = result.get("error") or ""
        go_refuses = bool(error) and "executing" not in error
        try:
            parse(case)
            ours_refuses = False
        except GoParseError:
            ours_refuses = True
        if case in GO_LENIENT:
            assert go_refuses and not ours_refuses, case
        else:
            assert ours_refuses == go_refuses, (case[:80], error)
