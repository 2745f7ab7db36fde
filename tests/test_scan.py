"""`ollama-guard scan` end to end against decoys, imitators and hostile servers.

Loopback only: decoys on 127.0.77.x, in-thread servers on 127.0.78.x and 127.0.79.x.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ollama_guard.scan.engine import Scanner, ScanSettings
from ollama_guard.scan.probes import ProbeNotAllowed, allowed_probes, check_probe
from ollama_guard.scan.targets import TargetSet
from support.servers import DecoyProcess, start_decoy
from support.tls import self_signed_cert

GUARD = [sys.executable, "-m", "ollama_guard"]
READ_ONLY = {"GET", "HEAD", "OPTIONS"}
TIMEOUT = 1.0
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# ----------------------------------------------------------------------------------- in-thread servers


class ServerThread:
    """An event loop in a thread hosting small test servers (raw asyncio or aiohttp)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.requests: list[tuple[str, str, str]] = []  # (server, method, path) seen by aiohttp apps

    def _call(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)  # type: ignore[arg-type]

    def raw(
        self, host: str, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> int:
        async def start() -> int:
            server = await asyncio.start_server(handler, host, 0)

            async def close() -> None:
                server.close()
                with contextlib.suppress(Exception):
                    server.close_clients()  # type: ignore[attr-defined]

            self._closers.append(close)
            return int(server.sockets[0].getsockname()[1])

        return int(self._call(start()))

    def raw_on(
        self,
        host: str,
        port: int,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> bool:
        """Like raw() on a given port; False when that port is taken on this address."""

        async def start() -> bool:
            try:
                server = await asyncio.start_server(handler, host, port)
            except OSError:
                return False

            async def close() -> None:
                server.close()

            self._closers.append(close)
            return True

        return bool(self._call(start()))

    def app(
        self,
        host: str,
        name: str,
        routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]],
        ssl_context: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> int:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.requests.append((name, request.method, request.path))
            return await handler(request)

        async def start() -> int:
            application = web.Application(middlewares=[record])
            for spec, handler in routes.items():
                method, path = spec.split(" ", 1)
                application.router.add_route(method, path, handler)
            runner = web.AppRunner(application, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
            await site.start()
            self._closers.append(runner.cleanup)
            return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

        return int(self._call(start()))

    def stop(self) -> None:
        async def close_all() -> None:
            for close in self._closers:
                with contextlib.suppress(Exception):
                    await close()

        with contextlib.suppress(Exception):
            self._call(close_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and never answers."""
    with contextlib.suppress(Exception):
        await reader.read()  # until the client gives up
    writer.close()


async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers 200 and streams bytes forever."""
    chunk = b"x" * 65536
    with contextlib.suppress(Exception):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        while True:
            writer.write(chunk)
            await writer.drain()
    writer.close()


async def trickler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sends a status line and then one header byte every 50 ms, forever."""
    with contextlib.suppress(Exception):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while True:
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(0.05)
    writer.close()


def json_route(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(payload, status=status, headers=headers)

    return handler


def text_route(text: str, content_type: str = "text/plain") -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type=content_type)

    return handler


async def gateway_401(request: web.Request) -> web.Response:
    return web.json_response(
        {"error": "missing or invalid API key"}, status=401, headers={"WWW-Authenticate": "Bearer"}
    )


SHOW_ANSWER = {
    "modelfile": '# Modelfile generated by "ollama show"\nFROM /root/.ollama/models/blobs/sha256-'
    + "ab" * 32
    + '\nTEMPLATE "{{ .Prompt }}"\nSYSTEM "You are the ACME support bot. Internal discount code: ZX-41."\n',
    "parameters": "stop <|eot|>",
    "template": "{{ .Prompt }}",
    "system": "You are the ACME support bot. Internal discount code: ZX-41.",
    "details": {"format": "gguf", "family": "llama"},
}


def fake_ollama_routes(version: str) -> dict[str, Any]:
    """A small Ollama imitation that also reveals a system prompt, a /root store path and cloud state."""

    async def show(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("model") != "acme-bot:latest":
            return web.json_response({"error": "model not found"}, status=404)
        return web.json_response(SHOW_ANSWER)

    return {
        "GET /": text_route("Ollama is running"),
        "GET /api/version": json_route({"version": version}),
        "GET /api/tags": json_route(
            {
                "models": [
                    {"name": "acme-bot:latest", "model": "acme-bot:latest", "digest": "ab" * 32, "size": 1}
                ]
            }
        ),
        "GET /api/ps": json_route({"models": [{"name": "acme-bot:latest"}]}),
        "GET /api/status": json_route({"cloud": {"disabled": False, "source": "none"}}),
        "POST /api/show": show,
        "HEAD /api/blobs/{digest}": text_route(""),
    }


def self_signed(tmp: Path) -> ssl.SSLContext | None:
    if shutil.which("openssl") is None:
        return None
    cert, key = self_signed_cert(tmp, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


# ------------------------------------------------------------------------------------------- the lab


@dataclass
class Lab:
    old: DecoyProcess  # 0.1.33
    mid: DecoyProcess  # 0.17.0
    new: DecoyProcess  # 0.33.0, OLLAMA_ORIGINS=*
    servers: ServerThread
    ports: dict[str, int] = field(default_factory=dict)  # name -> port of in-thread servers
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address

    @property
    def decoys(self) -> list[DecoyProcess]:
        return [self.old, self.mid, self.new]

    def endpoint(self, name: str) -> str:
        return f"{self.hosts[name]}:{self.ports[name]}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("scanlab")
    specs = [
        ("127.0.77.1", "0.1.33", ()),
        ("127.0.77.2", "0.17.0", ()),
        ("127.0.77.3", "0.33.0", ("--origins", "*")),
    ]
    contexts = []
    for index, (host, version, extra) in enumerate(specs):
        (root / f"d{index}").mkdir()
        contexts.append(
            start_decoy(root / f"d{index}", host=host, version=version, seed_models=2, extra_args=extra)
        )
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(3) as pool:
        decoys = list(pool.map(lambda cm: cm.__enter__(), contexts))
        for cm in contexts:
            stack.push(cm.__exit__)
        servers = ServerThread()
        stack.callback(servers.stop)
        lab = Lab(decoys[0], decoys[1], decoys[2], servers)
        raw = {
            "silent": ("127.0.78.1", silent),
            "endless": ("127.0.78.2", endless),
            "trickler": ("127.0.78.3", trickler),
        }
        for name, (host, handler) in raw.items():
            lab.hosts[name], lab.ports[name] = host, servers.raw(host, handler)
        apps: dict[str, tuple[str, dict[str, Any], ssl.SSLContext | None]] = {
            "plain": (
                "127.0.78.4",
                {"GET /": text_route("<html><title>Router</title></html>", "text/html")},
                None,
            ),
            "gateway": (
                "127.0.78.5",
                {
                    "GET /{tail:.*}": gateway_401,
                    "POST /{tail:.*}": gateway_401,
                    "HEAD /{tail:.*}": gateway_401,
                    "OPTIONS /{tail:.*}": gateway_401,
                },
                None,
            ),
            "kobold": (
                "127.0.78.6",
                {
                    "GET /": text_route("<html><title>KoboldAI Lite</title></html>", "text/html"),
                    "GET /api/version": json_route({"version": "0.6.4"}),
                    "GET /api/tags": json_route(
                        {"models": [{"name": "koboldcpp/Llama-3", "model": "koboldcpp/Llama-3"}]}
                    ),
                    "GET /api/extra/version": json_route({"result": "KoboldCpp", "version": "1.80.3"}),
                    "GET /v1/models": json_route(
                        {
                            "object": "list",
                            "data": [{"id": "koboldcpp/Llama-3", "object": "model", "owned_by": "koboldcpp"}],
                        }
                    ),
                },
                None,
            ),
            "fake": ("127.0.78.7", fake_ollama_routes("0.6.5"), None),
        }
        tls = self_signed(root)
        if tls is not None:
            apps["tls"] = ("127.0.78.8", fake_ollama_routes("0.12.0"), tls)
        for name, (host, routes, context) in apps.items():
            lab.hosts[name], lab.ports[name] = host, servers.app(host, name, routes, context)
        yield lab


def run_scan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str, float]:
    """`ollama-guard scan ARGS` in-process (the entry point, so errors map to exit codes as for users)."""
    from ollama_guard.cli import main

    capsys.readouterr()
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        main(["scan", *args])
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err, elapsed


def scan_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, Any], int, float]:
    code, out, err, elapsed = run_scan(capsys, *args, "--format", "json", "--timeout", str(TIMEOUT))
    assert code in (0, 1), err
    return json.loads(out), code, elapsed


def rules(host: dict[str, Any]) -> set[str]:
    return {f["rule"] for f in host["findings"]}


def assert_read_only(requests: list[tuple[str, str]]) -> None:
    for method, path in requests:
        assert method in READ_ONLY or (method, path) == ("POST", "/api/show"), (
            f"state-changing probe {method} {path}"
        )


# ----------------------------------------------------------------------------------------------- tests


def test_every_probe_is_read_only_and_the_gate_refuses_the_rest() -> None:
    for method, path in allowed_probes():
        assert method in READ_ONLY or (method, path) == ("POST", "/api/show"), (method, path)
        check_probe(method, path)
    forbidden = [
        ("POST", "/api/pull"),
        ("POST", "/api/push"),
        ("POST", "/api/create"),
        ("POST", "/api/copy"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/blobs/sha256:" + "0" * 64),
        ("POST", "/api/signout"),
        ("POST", "/api/me"),
        ("POST", "/api/experimental/web_search"),
        ("POST", "/api/generate"),
        ("POST", "/api/chat"),
        ("POST", "/api/embed"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("GET", "/api/pull"),
        ("GET", "/api/me"),
        ("POST", "/prompt"),
        ("HEAD", "/api/blobs/sha256:" + "1" * 64),
        ("GET", "/api/generate"),
    ]
    for method, path in forbidden:
        with pytest.raises(ProbeNotAllowed):
            check_probe(method, path)


def test_scan_assesses_decoys_names_imitators_and_ignores_the_rest(
    lab: Lab, capsys: pytest.CaptureFixture[str], scan_as_remote: None
) -> None:
    decoy_ports = sorted({d.port for d in lab.decoys})
    others = [
        lab.endpoint(n) for n in ("silent", "endless", "trickler", "plain", "gateway", "kobold", "fake")
    ]
    report, code, elapsed = scan_json(
        capsys,
        "127.0.77.1-3",
        "--ports",
        ",".join(map(str, decoy_ports)),
        *others,
        "--exclude",
        "127.0.77.250",
    )
    # hostile servers cost at most a few timeouts, run in parallel with everything else
    assert elapsed < 3 * TIMEOUT + 2, f"scan took {elapsed:.1f}s"
    assert code == 1  # critical findings at the default --fail-on high
    hosts = {h["target"]: h for h in report["hosts"]}
    assert set(report) >= {"tool", "hosts", "summary"}
    for host in hosts.values():
        assert set(host) == {
            "target",
            "url",
            "service",
            "version",
            "auth",
            "reachable_endpoints",
            "models",
            "findings",
        }

    old, mid, new = (hosts[d.hostport] for d in lab.decoys)
    for host, version in ((old, "0.1.33"), (mid, "0.17.0"), (new, "0.33.0")):
        assert host["service"] == "ollama" and host["version"] == version and host["auth"] == "none"
        assert len(host["models"]) == 2
        assert {
            "unauthenticated-api",
            "unauthenticated-admin",
            "model-enumeration",
            "plaintext-http",
            "CVE-2025-63389",
        } <= rules(host)
        assert {"/api/tags", "/api/version", "/api/blobs/{digest}"} <= set(host["reachable_endpoints"])
    assert "CVE-2024-37032" in rules(old) and "CVE-2024-37032" not in rules(mid) | rules(new)
    assert "CVE-2026-7482" in rules(mid) and "CVE-2026-7482" not in rules(new)
    assert "cors-any-origin" in rules(new) and "cors-any-origin" not in rules(old) | rules(mid)

    assert hosts[lab.endpoint("kobold")]["service"] == "koboldcpp"
    assert hosts[lab.endpoint("kobold")]["version"] == "1.80.3"
    assert "unauthenticated-api" in rules(hosts[lab.endpoint("kobold")])
    gateway = hosts[lab.endpoint("gateway")]
    assert gateway["auth"] == "required" and gateway["service"] == "protected-api"
    assert not {"unauthenticated-api", "unauthenticated-admin", "model-enumeration"} & rules(gateway)
    fake = hosts[lab.endpoint("fake")]
    assert {"system-prompt-exposed", "store-path-leak", "cloud-enabled", "model-enumeration"} <= rules(fake)
    leak = next(f for f in fake["findings"] if f["rule"] == "store-path-leak")
    assert "root" in leak["title"] and leak["evidence"]["store_path"].startswith(
        "/root/.ollama/models/blobs/"
    )
    assert leak["evidence"]["models_dir"] == "/root/.ollama/models" and leak["severity"] == "medium"
    prompt = next(f for f in fake["findings"] if f["rule"] == "system-prompt-exposed")
    assert "ZX-41" in prompt["evidence"]["system_prompt"]
    for name in ("silent", "endless", "trickler", "plain"):
        assert lab.endpoint(name) not in hosts, name

    # every finding of a host is also a top-level finding, targeted at IP:PORT
    flat = {(f["rule"], f["target"]) for f in report.get("findings", [])}
    for host in hosts.values():
        for finding in host["findings"]:
            assert finding["target"] == host["target"]
            assert (finding["rule"], finding["target"]) in flat
    assert report["summary"]["hosts"] == len(hosts)

    for decoy in lab.decoys:
        logged = [(r["method"], r["path"]) for r in decoy.requests()]
        assert logged, "the decoy saw no request"
        assert_read_only(logged)
        assert ("POST", "/api/show") in logged
    assert_read_only([(m, p) for _, m, p in lab.servers.requests])


def test_fail_on_never_and_severity_thresholds(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    _, code, _ = scan_json(capsys, lab.old.hostport, "--fail-on", "never")
    assert code == 0
    report, code, _ = scan_json(capsys, lab.endpoint("gateway"), "--fail-on", "low")
    assert code == 0  # only the info-level plaintext finding on loopback
    assert [h["auth"] for h in report["hosts"]] == ["required"]


def test_tls_is_detected_and_hostnames_are_kept(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    if "tls" not in lab.ports:
        pytest.skip("openssl not installed")
    report, _, _ = scan_json(capsys, lab.endpoint("tls"))
    (host,) = report["hosts"]
    assert host["url"].startswith("https://") and host["service"] == "ollama" and host["version"] == "0.12.0"
    assert "plaintext-http" not in rules(host)
    # a name target: resolved by the system resolver, named in titles, IP:PORT as target
    servers = ServerThread()
    try:
        port = servers.app("127.0.0.1", "local", fake_ollama_routes("0.6.5"))
        report, _, _ = scan_json(capsys, f"localhost:{port}")
    finally:
        servers.stop()
    (host,) = report["hosts"]
    assert host["target"] == f"127.0.0.1:{port}"
    assert host["url"] == f"http://localhost:{port}/"
    assert all("localhost" in f["title"] for f in host["findings"])


async def test_hostile_servers_are_bounded_and_results_stream(lab: Lab) -> None:
    targets = TargetSet([lab.endpoint(n) for n in ("trickler", "silent", "endless")] + [lab.old.hostport])
    scanner = Scanner(targets, ScanSettings(timeout=TIMEOUT, max_body=64 * 1024))
    started = time.monotonic()
    arrivals: list[tuple[str, float, Any]] = []
    async for result in scanner.results():
        arrivals.append((result.endpoint, time.monotonic() - started, result))
    total = time.monotonic() - started
    assert total < 3 * TIMEOUT + 1.5, f"hostile servers held the scan for {total:.1f}s"
    order = [a[0] for a in arrivals]
    for slow in ("trickler", "silent"):
        assert order.index(lab.old.hostport) < order.index(lab.endpoint(slow)), (
            "results must stream as hosts finish"
        )
    assert arrivals[0][1] < TIMEOUT, "the decoy was not reported promptly"
    by_endpoint = {a[0]: a[2] for a in arrivals}
    endless_root = by_endpoint[lab.endpoint("endless")].answers["GET /"]
    assert endless_root.truncated and len(endless_root.body) <= 64 * 1024
    assert all(by_endpoint[lab.endpoint(n)].service is None for n in ("trickler", "silent", "endless"))
    assert scanner.stats.open == 4 and scanner.stats.attempted == 4


def test_interrupted_scan_still_writes_its_report(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "partial.json"
    seen_before = len(lab.old.requests())
    proc = subprocess.Popen(
        [
            *GUARD,
            "scan",
            lab.old.hostport,
            lab.endpoint("silent"),
            "--timeout",
            "30",
            "--format",
            "json",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # wait until the decoy has been assessed
            if any(r["path"] == "/api/show" for r in lab.old.requests()[seen_before:]):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    report = json.loads(out.read_text())
    assert [h["target"] for h in report["hosts"]] == [lab.old.hostport]
    assert report["summary"]["interrupted"] is True


@pytest.mark.parametrize(
    "args",
    [["10.0.0.300"], ["127.0.77.1", "--ports", "0"], ["-iL", "/nonexistent/targets.txt"], []],
)
def test_bad_input_exits_2_with_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err, _ = run_scan(capsys, *args, "--format", "json")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_scan_reads_targets_from_masscan_output(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "masscan.lst"
    listing.write_text(
        f"#masscan\nopen tcp {lab.mid.port} {lab.mid.host} 1700000000\n"
        f"open tcp {lab.ports['plain']} {lab.hosts['plain']} 1700000001\n# end\n"
    )
    report, _, _ = scan_json(capsys, "-iL", str(listing))
    assert [h["target"] for h in report["hosts"]] == [lab.mid.hostport]
    assert os.path.getsize(listing) > 0


def test_real_gateway_in_front_of_a_decoy_is_seen_as_protected(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from support.servers import GATEWAY_READY, GUARD_ARGV, running_process

    argv = [
        *GUARD_ARGV,
        "serve",
        "--listen",
        "127.0.79.1:0",
        "--upstream",
        lab.old.url,
        "--db",
        f"sqlite:///{tmp_path / 'guard.db'}",
    ]
    try:
        context = running_process(argv, GATEWAY_READY, 30, env={"OLLAMA_GUARD_DATA_DIR": str(tmp_path)})
        _proc, url = context.__enter__()
    except Exception as exc:  # the gateway is another helper's work in progress
        pytest.skip(f"gateway did not start: {exc}")
    try:
        before = len(lab.old.requests())
        report, code, _ = scan_json(capsys, url.split("://", 1)[1], "--fail-on", "low")
    finally:
        context.__exit__(None, None, None)
    (host,) = report["hosts"]
    assert host["service"] == "ollama-guard-gateway" and host["auth"] == "required"
    assert host["models"] == [] and code == 0
    assert not {"unauthenticated-api", "unauthenticated-admin", "model-enumeration"} & rules(host)
    assert lab.old.requests()[before:] == [], "unauthenticated probes must not reach the upstream"


async def test_old_ollama_without_version_endpoint_is_dated_by_the_blob_probe(lab: Lab) -> None:
    servers = ServerThread()
    try:

        async def blob_404(request: web.Request) -> web.Response:
            return web.Response(status=404)

        routes = {
            "GET /": text_route("Ollama is running"),
            "GET /api/tags": json_route({"models": []}),
            "HEAD /api/blobs/{digest}": blob_404,
        }
        port = servers.app("127.0.79.2", "ancient", routes)
        results = [
            r
            async for r in Scanner(TargetSet([f"127.0.79.2:{port}"]), ScanSettings(timeout=TIMEOUT)).results()
        ]
    finally:
        servers.stop()
    (result,) = results
    host = result.to_json()
    assert host["service"] == "ollama" and host["version"] is None
    assert result.version_evidence and result.version_evidence.startswith("<=0.1.33")
    assert "CVE-2024-37032" in rules(host)
    finding = next(f for f in host["findings"] if f["rule"] == "CVE-2024-37032")
    assert "sha256:00" in finding["evidence"]["request"] and finding["evidence"]["status"] == 404
    assert_read_only([(m, p) for _, m, p in servers.requests])


async def test_rate_limit_paces_connections() -> None:
    # 127.0.79.100-139 on a port nothing listens on: every connect is refused at once.
    targets = TargetSet(["127.0.79.100-139"], ports=(9,))
    scanner = Scanner(targets, ScanSettings(rate=40, timeout=TIMEOUT))
    started = time.monotonic()
    assert [r async for r in scanner.results()] == []
    elapsed = time.monotonic() - started
    assert scanner.stats.attempted == 40
    assert 0.8 <= elapsed < 3.0, f"40 connects at 40/s took {elapsed:.2f}s"


def test_sarif_and_table_outputs(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str], scan_as_remote: None
) -> None:
    import jsonschema

    out = tmp_path / "scan.sarif"
    code, _, err, _ = run_scan(capsys, lab.mid.hostport, "-o", str(out), "--timeout", str(TIMEOUT))
    assert code == 1, err
    sarif = json.loads(out.read_text())
    schema = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
    jsonschema.validate(sarif, schema)
    rule_ids = {r["ruleId"] for r in sarif["runs"][0]["results"]}
    assert {"unauthenticated-admin", "CVE-2026-7482"} <= rule_ids
    code, out_text, _, _ = run_scan(capsys, lab.mid.hostport, "--format", "table", "--timeout", str(TIMEOUT))
    assert code == 1 and "CRITICAL" in out_text and "CVE-2026-7482" in out_text
    assert "Hosts" in out_text and lab.mid.hostport in out_text


AI_IMITATIONS: dict[str, tuple[str, dict[str, Any], str, str | None]] = {
    # name: (address, routes, expected service, expected version)
    "vllm": (
        "127.0.79.10",
        {
            "GET /version": json_route({"version": "0.9.2"}),
            "GET /v1/models": json_route(
                {
                    "object": "list",
                    "data": [
                        {"id": "Qwen/Qwen3-8B", "object": "model", "owned_by": "vllm", "max_model_len": 32768}
                    ],
                }
            ),
        },
        "vllm",
        "0.9.2",
    ),
    "llama.cpp": (
        "127.0.79.11",
        {
            "GET /health": json_route({"status": "ok"}),
            "GET /props": json_route(
                {
                    "default_generation_settings": {"n_ctx": 4096},
                    "build_info": "b5000-abc",
                    "model_path": "/models/x.gguf",
                }
            ),
            "GET /v1/models": json_route(
                {"object": "list", "data": [{"id": "x.gguf", "owned_by": "llamacpp"}]}
            ),
            "GET /api/tags": json_route({"models": [{"name": "x.gguf", "model": "x.gguf"}]}),  # Ollama-compat
        },
        "llama.cpp",
        "b5000-abc",
    ),
    "comfyui": (
        "127.0.79.12",
        {
            "GET /system_stats": json_route(
                {
                    "system": {"os": "posix", "comfyui_version": "0.3.40"},
                    "devices": [{"name": "cuda:0", "vram_total": 1}],
                }
            ),
        },
        "comfyui",
        "0.3.40",
    ),
    "open-webui-open": (
        "127.0.79.13",
        {
            "GET /api/config": json_route(
                {"name": "Open WebUI", "version": "0.6.5", "features": {"auth": False, "enable_signup": True}}
            ),
            "GET /api/version": json_route({"version": "0.6.5"}),
        },
        "open-webui",
        "0.6.5",
    ),
    "tgi": (
        "127.0.79.14",
        {
            "GET /info": json_route(
                {
                    "model_id": "bigscience/bloom-560m",
                    "max_total_tokens": 2048,
                    "router": "text-generation-router",
                    "version": "3.3.4",
                }
            ),
        },
        "tgi",
        "3.3.4",
    ),
    "triton": (
        "127.0.79.15",
        {
            "GET /v2": json_route({"name": "triton", "version": "2.59.0", "extensions": ["classification"]}),
        },
        "triton",
        "2.59.0",
    ),
    "lm-studio": (
        "127.0.79.16",
        {
            "GET /v1/models": json_route(
                {
                    "object": "list",
                    "data": [{"id": "qwen", "object": "model", "owned_by": "organization_owner"}],
                }
            ),
            "GET /api/v0/models": json_route(
                {"object": "list", "data": [{"id": "qwen", "type": "llm", "compatibility_type": "gguf"}]}
            ),
        },
        "lm-studio",
        None,
    ),
    # speaks Ollama's API but is not Ollama (no banner): named as such, never given Ollama's advisories
    "ollama-imitator": (
        "127.0.79.18",
        {
            "GET /": text_route("<html>proxy</html>", "text/html"),
            "GET /api/version": json_route({"version": "0.5.0"}),
            "GET /api/tags": json_route({"models": [{"name": "m:latest", "model": "m:latest"}]}),
        },
        "ollama-compatible",
        "0.5.0",
    ),
    # vLLM started with --api-key: /version stays open, the API answers 401 {"error": "Unauthorized"}
    "vllm-locked": (
        "127.0.79.17",
        {
            "GET /version": json_route({"version": "0.9.2"}),
            "GET /v1/models": json_route({"error": "Unauthorized"}, 401),
        },
        "protected-api",
        None,
    ),
}


async def test_other_ai_servers_are_named_and_their_auth_judged(scan_as_remote: None) -> None:
    servers = ServerThread()
    endpoints: dict[str, str] = {}
    try:
        for name, (address, routes, _service, _version) in AI_IMITATIONS.items():
            endpoints[f"{address}:{servers.app(address, name, routes)}"] = name
        scanner = Scanner(TargetSet(list(endpoints)), ScanSettings(timeout=TIMEOUT))
        results = {endpoints[r.endpoint]: r async for r in scanner.results()}
    finally:
        servers.stop()
    assert_read_only([(m, p) for _, m, p in servers.requests])
    for name, (_address, _routes, service, version) in AI_IMITATIONS.items():
        result = results[name]
        assert (result.service, result.version) == (service, version), name
    expected_auth = {
        "vllm": "none",
        "llama.cpp": "none",
        "comfyui": "none",
        "open-webui-open": "none",
        "tgi": "none",
        "triton": "none",
        "lm-studio": "none",
        "vllm-locked": "required",
        "ollama-imitator": "none",
    }
    assert {n: r.auth for n, r in results.items()} == expected_auth
    assert results["vllm"].models == ["Qwen/Qwen3-8B"]
    comfy = {f.rule: f for f in results["comfyui"].findings}
    assert comfy["unauthenticated-api"].severity == "critical"
    assert {f.rule for f in results["vllm-locked"].findings} == {"plaintext-http"}
    # none of them is mistaken for Ollama, so no Ollama advisories or admin findings
    for result in results.values():
        assert not {"unauthenticated-admin", "CVE-2025-63389"} & {f.rule for f in result.findings}


async def test_a_connect_left_hanging_is_given_up_after_the_timeout() -> None:
    # A listener whose backlog is full drops our SYN: the connect stays in progress (the slow path with a
    # writer callback and a timer, as on a filtered network) until --timeout.
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.79.50", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.79.50", port))
            fillers.append(filler)
        await asyncio.sleep(0.2)
        scanner = Scanner(TargetSet([f"127.0.79.50:{port}", "127.0.79.51:9"]), ScanSettings(timeout=0.5))
        started = time.monotonic()
        assert [r async for r in scanner.results()] == []
        elapsed = time.monotonic() - started
    finally:
        for sock in [listener, *fillers]:
            sock.close()
    assert scanner.stats.attempted == 2 and scanner.stats.open == 0
    assert 0.45 <= elapsed < 2.0, f"gave up after {elapsed:.2f}s"


async def test_open_ports_between_refused_ones_are_all_found() -> None:
    # Refused attempts reuse their socket (Linux): the open ports right after a refusal must still be seen.
    servers = ServerThread()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    try:
        port = servers.raw("127.0.79.70", hang_up)
        listening = {"127.0.79.70"}
        for last in (61, 62, 79):
            address = f"127.0.79.{last}"
            if servers.raw_on(address, port, hang_up):
                listening.add(address)
        scanner = Scanner(TargetSet(["127.0.79.60-80"], ports=(port,)), ScanSettings(timeout=TIMEOUT))
        found = {r.target.host async for r in scanner.results()}
    finally:
        servers.stop()
    assert found == listening and len(listening) >= 2
    assert scanner.stats.attempted == 21 and scanner.stats.open == len(listening)


def test_ai_ports_keyword_and_empty_results(capsys: pytest.CaptureFixture[str]) -> None:
    from ollama_guard.scan.cli import port_ranges
    from ollama_guard.scan.targets import ai_ports

    report, code, elapsed = scan_json(capsys, "127.0.79.90", "--ports", "ai,11434")
    assert code == 0 and report["hosts"] == [] and report["findings"] == []
    assert report["summary"]["attempted"] == len(set(ai_ports()) | {11434})
    assert report["summary"]["ports"] == port_ranges(ai_ports())
    assert port_ranges((8002, 80, 8000, 8001, 11434)) == "80,8000-8002,11434"
    assert elapsed < 5


def test_the_endpoint_catalog_is_a_second_gate_behind_the_probe_allowlist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even if the allowlist and the forbidden-path pattern were both edited carelessly, a route Ollama's
    catalog classes as admin/compute/outbound is still never sent."""
    import re

    from ollama_guard.scan import gate

    monkeypatch.setattr(gate, "_FORBIDDEN", re.compile(r"(?!)"))
    monkeypatch.setattr(
        gate, "_ALLOWED", gate.allowed_probes() | {("POST", "/api/pull"), ("DELETE", "/api/delete")}
    )
    for method, path in [("POST", "/api/pull"), ("DELETE", "/api/delete")]:
        with pytest.raises(ProbeNotAllowed, match="catalog"):
            check_probe(method, path)
    check_probe("POST", "/api/show")  # read-only in the catalog: still allowed
