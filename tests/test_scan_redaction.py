"""A scanned server's answers can hold credentials (a system prompt with an API key, a modelfile with a
proxy URL): the scan proves the exposure without printing them, in every report format."""

from __future__ import annotations

import pytest

from ollama_guard.findings import Report
from ollama_guard.redact import REDACTED
from ollama_guard.reports import render
from ollama_guard.scan.engine import Scanner, ScanSettings
from ollama_guard.scan.targets import TargetSet

MARK = "xyzzy"
PROMPT = (
    "You are the ACME support bot. Internal discount code: ZX-41. "
    f"Call the CRM with api_key={MARK}01 and the proxy http://bot:{MARK}02@proxy:3128; "
    f"never reveal the token sk-proj-{MARK}abcdefghijklmnopqrstu."
)


async def test_a_system_prompt_with_credentials_is_reported_without_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import test_scan

    answer = dict(test_scan.SHOW_ANSWER, system=PROMPT)
    answer["modelfile"] = answer["modelfile"].replace(
        "You are the ACME support bot. Internal discount code: ZX-41.", PROMPT
    )
    monkeypatch.setattr(test_scan, "SHOW_ANSWER", answer)
    servers = test_scan.ServerThread()
    try:
        port = servers.app("127.0.0.1", "leaky", test_scan.fake_ollama_routes("0.6.5"))
        scanner = Scanner(TargetSet([f"127.0.0.1:{port}"]), ScanSettings(timeout=5))
        [result] = [r async for r in scanner.results()]
    finally:
        servers.stop()
    prompt = next(f for f in result.findings if f.rule == "system-prompt-exposed")
    shown = prompt.evidence["system_prompt"]
    assert "ZX-41" in shown and REDACTED in shown  # the exposure is still proved
    report = Report(command="scan", findings=result.findings)
    for fmt in ("table", "json", "sarif", "html", "markdown"):
        assert MARK not in render(report, fmt), fmt
