"""HTML reports as a person sees them: each report kind (scan, audit, verify, investigate) written by the
real command, opened in headless Chromium, and checked on the rendered DOM — sections are tables, no
markup shows as text, hostile strings from evidence stay text and no script runs.

Set OLLAMA_GUARD_SCREENSHOTS=1 to (re)write docs/img/report-<kind>.png from these pages.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_guard.decoy.fabricate import fabricate, install
from ollama_guard.findings import Finding, Report, ReportSection
from ollama_guard.ollama.names import parse_model_name
from ollama_guard.ollama.store import ModelStore
from ollama_guard.reports import render
from support.servers import start_decoy

DATA = Path(__file__).parent / "data"
DOCS_IMG = Path(__file__).parent.parent / "docs" / "img"
XSS = "<script>window.__pwned = 1; alert('xss')</script>"
IMG_XSS = "<img src=x onerror=alert(2)>"
SLASHED_XSS = "<img/src=x/onerror=alert(5)>"  # one short word with '/': kept whole by a span, still text
KINDS = ("scan", "audit", "verify", "investigate")


def guard(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`ollama-guard ARGS` as a user runs it (a separate process)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ollama_guard", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _scan(root: Path) -> Path:
    with start_decoy(root, version="0.1.33", seed_models=3, extra_args=("--origins", "*")) as decoy:
        result = guard("scan", decoy.hostport, "-o", "scan.html", "--fail-on", "never", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "scan.html"


def _audit(root: Path) -> Path:
    host = root / "host"
    unit = host / "etc/systemd/system/ollama.service.d/override.conf"
    unit.parent.mkdir(parents=True)
    unit.write_text(f'[Service]\nEnvironment="OLLAMA_HOST=0.0.0.0:11434" "OLLAMA_ORIGINS=*,{IMG_XSS}"\n')
    (host / "etc/systemd/system/ollama.service").write_text(
        "[Service]\nExecStart=/usr/local/bin/ollama serve\nUser=ollama\n"
    )
    compose = host / "srv/llm/docker-compose.yml"
    compose.parent.mkdir(parents=True)
    compose.write_text(
        'services:\n  ollama:\n    image: ollama/ollama:0.1.33\n    ports:\n      - "11434:11434"\n'
    )
    result = guard("audit", "--root", str(host), "-o", "audit.html", "--fail-on", "never", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "audit.html"


def _verify(root: Path) -> Path:
    store = ModelStore(root / "models")
    store.ensure()
    for name in ("llama3.2:1b", "qwen2.5:0.5b", "mistral:7b"):
        install(store, fabricate(parse_model_name(name)))
    blob = next(p for p in sorted((root / "models" / "blobs").iterdir()) if p.stat().st_size > 100)
    data = bytearray(blob.read_bytes())
    data[50] ^= 0xFF  # one flipped byte: a digest mismatch
    blob.write_bytes(bytes(data))
    (root / "models" / "blobs" / f"sha256-{IMG_XSS}").write_text("stray")  # a hostile file name
    env = {"OLLAMA_GUARD_HOME": str(root / "home")}
    result = guard("verify", "--models-dir", str(root / "models"), "-o", "verify.html", "--fail-on", "never",
                   cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    return root / "verify.html"


def _investigate(root: Path) -> Path:
    hostile = root / "hostile.log"
    hostile.write_text(
        'time=2025-07-06T22:14:40.000Z level=INFO source=routes.go:1288 msg="Listening on [::]:11434 '
        '(version 0.5.11)"\n'
        '[GIN] 2025/07/06 - 22:14:52 | 400 |     153.324µs |   192.0.2.66 | POST     "/api/pull"\n'
        f"panic: runtime error: {XSS}\n\ngoroutine 51 [running]:\nmain.handler()\n\t/go/src/x.go:1 +0x1\n"
    )
    logs = [str(DATA / "logs" / name) for name in ("exfil.log", "recon.log")]
    result = guard(
        "investigate", *logs, str(hostile), "-o", "investigate.html", "--fail-on", "never", cwd=root
    )
    assert result.returncode == 0, result.stderr
    return root / "investigate.html"


@pytest.fixture(scope="module")
def report_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each report kind, written by the real command."""
    makers = {"scan": _scan, "audit": _audit, "verify": _verify, "investigate": _investigate}
    return {kind: make(tmp_path_factory.mktemp(kind)) for kind, make in makers.items()}


def open_report(page: Any, path: Path) -> Any:
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page


def visible_text(page: Any) -> str:
    return page.inner_text("body")


def dom_shape(page: Any) -> dict[str, Any]:
    return page.evaluate(
        """() => ({
            tables: [...document.querySelectorAll('section table')].map(t => ({
                section: t.closest('section').querySelector('h2')?.textContent ?? '',
                rows: t.querySelectorAll('tr').length,
            })),
            h2: [...document.querySelectorAll('h2')].map(h => h.textContent),
            scripts: document.querySelectorAll('script').length,
            images: document.querySelectorAll('img').length,
            pwned: window.__pwned === 1,
            badges: [...document.querySelectorAll('.sev')].map(b => ({
                text: b.textContent, height: b.getBoundingClientRect().height,
                lineHeight: parseFloat(getComputedStyle(b).lineHeight) || 0,
            })),
        })"""
    )


def screenshot(page: Any, kind: str) -> None:
    if os.environ.get("OLLAMA_GUARD_SCREENSHOTS"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        height = min(page.evaluate("() => document.body.scrollHeight"), 1500)
        page.set_viewport_size({"width": 1280, "height": height})
        page.screenshot(path=str(DOCS_IMG / f"report-{kind}.png"))


@pytest.mark.parametrize("kind", KINDS)
def test_each_report_kind_renders_as_a_page(page: Any, report_files: dict[str, Path], kind: str) -> None:
    open_report(page, report_files[kind])
    text = visible_text(page)
    shape = dom_shape(page)
    # Markup is never shown as text: no escaped tags, no entity names (the finalize bug showed
    # "<section class=\"extra\"><table>…" for every section after the summary).
    for leaked in ("&lt;", "&gt;", "&#34;", "&amp;", "<section", "<table", "<td>", "<tr>"):
        assert leaked not in text, f"{kind}: {leaked!r} shows as text"
    # Every section after the summary is a real table with rows.
    titled = {t["section"] for t in shape["tables"] if t["rows"] > 1}
    assert "Findings" in titled, shape
    expected_sections = {
        "scan": {"Hosts"},
        "audit": set(),
        "verify": {"Models", "Verification"},
        "investigate": {"Timeline"},
    }[kind]
    for title in expected_sections:
        assert any(title in t for t in titled), (title, shape["tables"])
    # Hostile strings from evidence are text: no element was injected and no script ran.
    assert shape["scripts"] == 0 and shape["images"] == 0 and not shape["pwned"]
    # Severity badges are one line each (were broken as "CRITI CAL" inside narrow cells).
    for badge in shape["badges"]:
        assert badge["height"] <= 1.6 * max(badge["lineHeight"], 12), badge
    assert "`" not in page.inner_text("#findings")  # backticks are rendered as code, not shown
    # Short words (addresses, dates, rule ids) are never broken inside, in any table.
    broken = page.evaluate(
        """() => [...document.querySelectorAll('td')].filter(td => {
            const text = td.textContent.trim();
            if (!text || /\\s/.test(text) || text.length > 24) return false;
            const tops = new Set();
            const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                const range = document.createRange();
                range.selectNodeContents(node);
                for (const rect of range.getClientRects()) tops.add(Math.round(rect.top));
            }
            return tops.size > 1;  // the word's text sits on more than one line
        }).map(td => td.textContent.trim())"""
    )
    assert broken == [], broken
    # Nothing is cut off at the right edge of a normal window: every table fits the page.
    overflow = page.evaluate(
        """() => [...document.querySelectorAll('table')].filter(t => t.getBoundingClientRect().right >
                 document.documentElement.clientWidth + 1).map(t => t.closest('section').id || 'extra')"""
    )
    assert overflow == [], overflow
    screenshot(page, kind)


def test_hostile_evidence_stays_text_in_every_kind(page: Any, report_files: dict[str, Path]) -> None:
    open_report(page, report_files["investigate"])
    assert "<script>window.__pwned" in visible_text(page).replace("\n", "") or XSS in page.content().replace(
        "&lt;", "<"
    ).replace("&gt;", ">")
    for kind in ("audit", "verify"):
        open_report(page, report_files[kind])
        page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
        assert IMG_XSS in visible_text(page), kind
        assert dom_shape(page)["images"] == 0


def hostile_report() -> Report:
    return Report(
        command="scan",
        summary={"interrupted": False, "unresolved": [], "services": {"ollama": 2}, "note": XSS},
        findings=[
            Finding(
                rule="unauthenticated-admin",
                severity="critical",
                target=f"10.0.0.7:11434 {IMG_XSS}",
                title=f"Admin API open to anyone {XSS}",
                detail="Run `ollama serve` only on loopback.\nSecond line: `<img src=x onerror=alert(4)>`. "
                f"Seen: {SLASHED_XSS}",
                remediation="Add a drop-in:\n```ini\n[Service]\nEnvironment=\"OLLAMA_HOST=127.0.0.1\"\n```\n"
                "then `systemctl restart ollama`.",
                evidence={"banner": XSS, "models": [IMG_XSS]},
                references=["javascript:alert(3)", "https://github.com/ollama/ollama/issues/1"],
            )
        ],
        sections=[
            ReportSection(lead=True, title=f"Hosts {XSS}", columns=["Target", "Models"],
                          rows=[["10.0.0.7:11434", f"`llama3` {IMG_XSS}"]]),
            ReportSection(title="Parse statistics", columns=["Source", "Lines"], rows=[["a.log", "10"]]),
        ],
    )


def test_synthetic_hostile_report_in_the_browser(page: Any, tmp_path: Path) -> None:
    path = tmp_path / "hostile.html"
    path.write_text(render(hostile_report(), "html"))
    open_report(page, path)
    page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
    shape = dom_shape(page)
    assert shape["scripts"] == 0 and shape["images"] == 0 and not shape["pwned"]
    text = visible_text(page)
    assert XSS in text.replace("\n", "") and IMG_XSS in text and SLASHED_XSS in text
    assert "&lt;" not in text
    # the lead section and the trailing one are tables
    assert {"Hosts " + XSS, "Parse statistics"} <= {t["section"] for t in shape["tables"]}
    # summary values read as words, not Python or JSON reprs
    summary = page.inner_text("#summary")
    for repr_text in ("False", "[]", "{", '"ollama"'):
        assert repr_text not in summary, summary
    assert "ollama 2" in summary and "none" in summary and "no" in summary.split()
    # backticks: inline code and a fenced block become code elements; none is shown literally
    codes = page.eval_on_selector_all("article code, td code", "els => els.map(e => e.textContent)")
    assert "ollama serve" in codes and "systemctl restart ollama" in codes and "llama3" in codes
    assert "<img src=x onerror=alert(4)>" in codes  # a code span's content is text too
    block = page.inner_text("article pre.code")
    assert block.startswith("[Service]") and "OLLAMA_HOST=127.0.0.1" in block
    assert "`" not in page.inner_text("main")
    # only http(s) references become links (never javascript:)
    hrefs = page.eval_on_selector_all("article a", "els => els.map(e => e.getAttribute('href'))")
    assert hrefs == ["https://github.com/ollama/ollama/issues/1"]


@pytest.fixture
def narrow_page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 420, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()


def test_badges_never_wrap_in_a_narrow_window(narrow_page: Any, tmp_path: Path) -> None:
    path = tmp_path / "narrow.html"
    path.write_text(render(hostile_report(), "html"))
    open_report(narrow_page, path)
    badges = dom_shape(narrow_page)["badges"]
    assert badges and all(b["height"] <= 1.6 * max(b["lineHeight"], 12) for b in badges), badges
