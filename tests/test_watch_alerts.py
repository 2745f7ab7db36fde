"""Alert delivery from a running `watch` to real local receivers: a webhook (aiohttp on 127.0.0.1) in the
json, Slack and Teams shapes with retries, and syslog over UDP and TCP (RFC 5424); latency under 1 s."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from support.watch import RECON, WatchProcess, append, gin

RFC5424 = re.compile(
    rb"<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S+) ollama-guard (\d+) (\S+) "
    rb"(\[ollama-guard@32473(?: [a-z]+=\"(?:[^\"\\\]]|\\.)*\")+\]) \xef\xbb\xbf(.*)$", re.S)


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.got: list[tuple[float, str, Any]] = []
        self.fail_first = fail_first
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.json()
        if self.calls <= self.fail_first:
            return web.Response(status=503, headers={"Retry-After": "0"})
        self.got.append((time.monotonic(), request.path, body))
        return web.Response(text="ok")

    async def start(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, f"http://127.0.0.1:{port}"


async def _until(predicate: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def _start_watch(args: list[str]) -> WatchProcess:
    return await asyncio.to_thread(WatchProcess, args)


async def _stop(watch: WatchProcess) -> int:
    code = await asyncio.to_thread(watch.stop)
    watch.__exit__()
    return code


@pytest.mark.parametrize("fmt", ["json", "slack", "teams"])
async def test_webhook_delivery_shape_retry_and_latency(tmp_path: Path, fmt: str) -> None:
    receiver = Receiver(fail_first=1 if fmt == "json" else 0)
    runner, base = await receiver.start()
    log = tmp_path / "server.log"
    log.write_text("")
    watch = await _start_watch([str(log), "--tz", "UTC", "--alert", f"{base}/hooks/T000/B000/secret-part",
                                "--alert-format", fmt])
    try:
        evil = gin("203.0.113.9", "GET", "/<!channel>[click](http://evil.example)")
        written = append(log, [*RECON[:3], evil])
        await _until(lambda: receiver.got)
        at, path, body = receiver.got[0]
        assert at - written < 1.0 + (0.5 if fmt == "json" else 0)  # json: one retry after a 503
        assert path == "/hooks/T000/B000/secret-part"
        if fmt == "json":
            assert receiver.calls == 2
            assert body["rule"] == "recon-burst" and body["count"] == 3 and body["source"] == "server.log"
        elif fmt == "slack":
            assert body["text"].startswith("[MEDIUM] recon-burst: ")
            kinds = [b["type"] for b in body["blocks"]]
            assert kinds[0] == "header" and "section" in kinds
            assert len(body["blocks"][0]["text"]["text"]) <= 150
        else:
            attachment = body["attachments"][0]
            assert body["type"] == "message"
            assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
            assert attachment["content"]["type"] == "AdaptiveCard"
            facts = {f["title"]: f["value"] for f in attachment["content"]["body"][2]["facts"]}
            assert facts["Rule"] == "recon-burst" and facts["Count"] == "3"
        # the attacker's path reaches the chat only escaped
        await _until(lambda: len(receiver.got) >= 1)
        text = json.dumps([b for _, _, b in receiver.got])
        if fmt == "slack":
            assert "<!channel>" not in text
    finally:
        code = await _stop(watch)
        await runner.cleanup()
    assert code == 0
    assert not any("secret-part" in line for line in watch.stderr)


async def test_webhook_that_never_answers_is_retried_then_reported_without_its_path(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=100)
    runner, base = await receiver.start()
    log = tmp_path / "server.log"
    log.write_text("")
    watch = await _start_watch([str(log), "--tz", "UTC", "--alert", f"{base}/secret-token", "--alert", "-"])
    try:
        append(log, RECON[:3])
        await _until(lambda: receiver.calls >= 4, seconds=10)
        await _until(lambda: any("not delivered" in line for line in watch.stderr), seconds=5)
        assert watch.alerts.qsize() == 1  # stdout got it regardless
    finally:
        await _stop(watch)
        await runner.cleanup()
    assert receiver.calls == 4
    assert not any("secret-token" in line for line in watch.stderr)
    assert any(f"{base}/…" in line for line in watch.stderr)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[float, bytes]] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((time.monotonic(), data))


def _check_syslog(message: bytes, rule: str, pri: int) -> dict[str, Any]:
    m = RFC5424.match(message)
    assert m is not None, message[:200]
    assert int(m.group(1)) == pri
    assert m.group(5) == rule.encode()
    assert f'rule="{rule}"'.encode() in m.group(6)
    return json.loads(m.group(7))


async def test_syslog_udp_and_tcp(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    udp_transport, udp = await loop.create_datagram_endpoint(_Udp, local_addr=("127.0.0.1", 0))
    udp_port = udp_transport.get_extra_info("sockname")[1]
    frames: list[tuple[float, bytes]] = []

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                length = int((await reader.readuntil(b" "))[:-1])
                frames.append((time.monotonic(), await reader.readexactly(length)))
            except (asyncio.IncompleteReadError, ValueError):
                break
        writer.close()

    server = await asyncio.start_server(on_tcp, "127.0.0.1", 0)
    tcp_port = server.sockets[0].getsockname()[1]
    log = tmp_path / "server.log"
    log.write_text("")
    watch = await _start_watch([str(log), "--tz", "UTC", "--alert", f"syslog://127.0.0.1:{udp_port}",
                                "--alert", f"syslog+tcp://127.0.0.1:{tcp_port}?facility=local3"])
    try:
        written = append(log, [*RECON[:3], gin("203.0.113.9", "DELETE", "/api/delete")])
        await _until(lambda: len(udp.got) >= 3 and len(frames) >= 3)
        assert max(t for t, _ in udp.got[:3]) - written < 1.0
        assert max(t for t, _ in frames[:3]) - written < 1.0
        by_rule_udp = {}
        for _, data in udp.got:
            rule = data.split(b" ")[5].decode()
            pri = {"recon-burst": 4 * 8 + 4}.get(rule, 4 * 8 + 3)  # auth; medium = warning, high = err
            by_rule_udp[rule] = _check_syslog(data, rule, pri)
        assert {"recon-burst", "model-deleted", "admin-from-remote"} <= set(by_rule_udp)
        assert by_rule_udp["model-deleted"]["target"] == "203.0.113.9"
        for _, data in frames:
            rule = data.split(b" ")[5].decode()
            pri = {"recon-burst": 19 * 8 + 4}.get(rule, 19 * 8 + 3)  # local3
            _check_syslog(data, rule, pri)
    finally:
        code = await _stop(watch)
        udp_transport.close()
        server.close()
    assert code == 0
