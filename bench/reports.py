"""Report rendering on a large incident: a 10,000-client timeline and 2,000 findings (the most
`investigate` lists), in every format. Baseline: the JSON renderer in the same run (it only serialises);
the human formats are judged by their ratio to it and by wall time.

    python bench/reports.py [--clients N] [--findings N] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import time

from ollama_guard.findings import Finding, Report, ReportSection
from ollama_guard.reports import render

DIGEST = "sha256:ab704f5c7b61f10c38cba3e3fe1a6bc06b91d43ce15eb51fcd5fb0a0cd3bc30e"


def incident(clients: int, findings: int) -> Report:
    rows = [
        [f"198.51.{i // 250}.{i % 250}", "public", "2025-01-11T23:31:25Z", "2025-01-11T23:40:00Z", "5",
         f"DELETE /api/delete ×1, POST /api/blobs/{DIGEST} ×1, POST /api/copy ×1", "200×5", "800.0 MB",
         "admin-from-remote, exfiltration-chain"]
        for i in range(clients)
    ]
    columns = ["Client", "Class", "First seen", "Last seen", "Requests", "Endpoints", "Statuses", "Pushed",
               "Rules"]
    return Report(
        command="investigate",
        summary={"sources": ["server.log"], "clients": clients, "interrupted": False},
        findings=[
            Finding(rule="admin-from-remote", severity="high", target=f"198.51.{i // 250}.{i % 250}",
                    title="Model administration from an untrusted client",
                    detail="Made 5 matching request(s): `DELETE /api/delete`, POST /api/copy. " * 3,
                    remediation="Keep admin endpoints to loopback (`OLLAMA_HOST=127.0.0.1:11434`).",
                    evidence={"endpoints": {"POST /api/copy": 1}}, references=["https://attack.mitre.org/"])
            for i in range(findings)
        ],
        sections=[ReportSection(title="Timeline per client", columns=columns, rows=rows, lead=True)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--findings", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    report = incident(args.clients, args.findings)
    times: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    for _ in range(args.repeat):
        for fmt in ("json", "sarif", "markdown", "html", "table"):
            started = time.perf_counter()
            text = render(report, fmt, color=False)
            times.setdefault(fmt, []).append(time.perf_counter() - started)
            sizes[fmt] = len(text.encode())
    base = statistics.median(times["json"])
    print(f"{args.clients} timeline rows, {args.findings} findings, median of {args.repeat}")
    print("| format | median s | best s | × json | size |")
    print("|---|---|---|---|---|")
    for fmt, values in times.items():
        median = statistics.median(values)
        ratio = median / base
        print(f"| {fmt} | {median:.2f} | {min(values):.2f} | {ratio:.1f} | {sizes[fmt] / 1e6:.1f} MB |")


if __name__ == "__main__":
    main()
