"""Target parsing for `ollama-guard scan`: syntaxes, scanner-output files, exclusions and laziness."""

from __future__ import annotations

import itertools
import json
import time
import tracemalloc
from pathlib import Path

import pytest

from ollama_guard.errors import InputError
from ollama_guard.scan.targets import (
    Exclusions,
    Target,
    TargetSet,
    ai_ports,
    parse_ports,
    parse_spec,
    sniff_format,
)


def endpoints(ts: TargetSet) -> list[str]:
    return [t.endpoint if not t.is_name else f"{t.host}:{t.port}" for t in ts]


def test_ports_lists_ranges_and_ai() -> None:
    assert parse_ports(None) == (11434,)
    assert parse_ports("80, 8000-8002,80") == (80, 8000, 8001, 8002)
    ai = parse_ports("ai")
    assert 11434 in ai and 8000 in ai and 5001 in ai and 8188 in ai and 1234 in ai
    assert ai == ai_ports()
    for bad in ("0", "70000", "9-3", "http", "1-"):
        with pytest.raises(InputError):
            parse_ports(bad)


def test_single_addresses_hosts_and_urls() -> None:
    ts = TargetSet(
        ["10.0.0.1", "10.0.0.2:8080", "[fd00::1]:9000", "fd00::2", "https://10.0.0.3/ollama/", "localhost"],
        ports=(11434, 8000),
    )
    targets = list(ts)
    assert [t.endpoint for t in targets if not t.is_name] == [
        "10.0.0.1:11434",
        "10.0.0.1:8000",
        "10.0.0.2:8080",
        "[fd00::1]:9000",
        "[fd00::2]:11434",
        "[fd00::2]:8000",
        "10.0.0.3:443",
    ]
    url_target = next(t for t in targets if t.port == 443)
    assert url_target.scheme == "https" and url_target.base_path == "/ollama"
    names = [t for t in targets if t.is_name]
    assert [(t.host, t.port) for t in names] == [("localhost", 11434), ("localhost", 8000)]
    assert names[0].resolved("127.0.0.1") == Target("127.0.0.1", 11434, False, None, "", "localhost")


def test_cidrs_and_ranges() -> None:
    assert endpoints(TargetSet(["192.168.5.0/30"])) == [f"192.168.5.{i}:11434" for i in range(4)]
    assert endpoints(TargetSet(["10.0.0.250-10.0.1.1"], ports=(1,))) == [
        "10.0.0.250:1",
        "10.0.0.251:1",
        "10.0.0.252:1",
        "10.0.0.253:1",
        "10.0.0.254:1",
        "10.0.0.255:1",
        "10.0.1.0:1",
        "10.0.1.1:1",
    ]
    assert endpoints(TargetSet(["10.0.0.1-3"])) == ["10.0.0.1:11434", "10.0.0.2:11434", "10.0.0.3:11434"]
    assert endpoints(TargetSet(["fd00::/126"])) == ["[fd00::]:11434"] + [
        f"[fd00::{i}]:11434" for i in range(1, 4)
    ]
    assert endpoints(TargetSet(["fd00::1-fd00::3"])) == [
        "[fd00::1]:11434",
        "[fd00::2]:11434",
        "[fd00::3]:11434",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "10.0.0.300",
        "10.0.0.5-3",
        "10.0.0.1-300",
        "10.0.0.0/33",
        "http://",
        "ftp://10.0.0.1/",
        "10.0.0.1:99999",
        "[10.0.0.1]:80",
        "bad host name",
        "0.0.0.0/4",
        "http://u:p@10.0.0.1/",
    ],
)
def test_bad_targets_are_input_errors(bad: str) -> None:
    with pytest.raises(InputError):
        parse_spec(bad)


def test_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(InputError) as info:
        parse_spec("http://admin:hunter2@10.0.0.1/")
    assert "hunter2" not in str(info.value)


def test_a_slash_8_is_lazy_and_counted_without_materialising() -> None:
    tracemalloc.start()
    started = time.perf_counter()
    ts = TargetSet(["10.0.0.0/8", "172.16.0.0/16"], ports=(11434, 8000))
    assert ts.count() == (2**24 + 2**16) * 2
    first = list(itertools.islice(iter(ts), 5))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [t.endpoint for t in first] == [
        "10.0.0.0:11434",
        "10.0.0.0:8000",
        "10.0.0.1:11434",
        "10.0.0.1:8000",
        "10.0.0.2:11434",
    ]
    assert peak < 512 * 1024, f"expanding a /8 lazily used {peak} bytes"
    assert time.perf_counter() - started < 1.0


def test_a_slash_16_streams_in_constant_memory() -> None:
    ts = TargetSet(["127.1.0.0/16"])
    tracemalloc.start()
    count = 0
    for _ in ts:
        count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 65536
    assert peak < 256 * 1024, f"iterating a /16 peaked at {peak} bytes: it was materialised"


def test_too_large_network_is_refused() -> None:
    with pytest.raises(InputError, match="split it"):
        TargetSet(["fd00::/64"])


def test_exclusions_addresses_cidrs_ranges_and_names() -> None:
    excl = Exclusions(["10.0.0.0/30,10.0.0.9", "10.0.0.12-13", "localhost"])
    ts = TargetSet(["10.0.0.0/28", "localhost", "127.0.0.1"], ports=(1,), exclusions=excl)
    got = endpoints(ts)
    assert got == [f"10.0.0.{i}:1" for i in range(16) if i not in (0, 1, 2, 3, 9, 12, 13)]
    # a fully excluded block is skipped without walking it
    big = TargetSet(["10.0.0.0/8"], exclusions=Exclusions(["0.0.0.0/0"]))
    started = time.perf_counter()
    assert list(big) == []
    assert time.perf_counter() - started < 0.5


def test_plain_list_file_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text(
        "# lab hosts\n10.0.0.1\n\n10.0.0.2:8080   # api\n10.0.0.8/31, localhost\nhttp://10.0.0.9:1234/\n"
    )
    ts = TargetSet(files=[str(path)], ports=(11434,))
    assert ts.count() is None
    assert endpoints(ts) == [
        "10.0.0.1:11434",
        "10.0.0.2:8080",
        "10.0.0.8:11434",
        "10.0.0.9:11434",
        "localhost:11434",
        "10.0.0.9:1234",
    ]


def test_bad_line_in_list_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("10.0.0.1\nnot a target!\n")
    with pytest.raises(InputError, match=r"t\.txt:2"):
        list(TargetSet(files=[str(path)]))


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        TargetSet(files=[str(tmp_path / "nope.txt")])


MASSCAN_LIST = """#masscan
open tcp 11434 10.1.0.5 1700000000
open tcp 8000 10.1.0.6 1700000001
banner tcp 11434 10.1.0.5 1700000002 http Ollama is running
open udp 53 10.1.0.7 1700000003
# end
"""

MASSCAN_JSON = (
    "[\n"
    '{   "ip": "10.1.0.5",   "timestamp": "1700000000", "ports": [ {"port": 11434, "proto": "tcp", '
    '"status": "open", "reason": "syn-ack", "ttl": 64} ] }\n'
    ",\n"
    '{   "ip": "10.1.0.6",   "timestamp": "1700000001", "ports": [ {"port": 8000, "proto": "tcp", '
    '"status": "open", "reason": "syn-ack", "ttl": 64} ] }\n'
    ",\n"
    "{finished: 1}\n"
    "]\n"
)

MASSCAN_NDJSON = (
    json.dumps(
        {
            "ip": "10.1.0.5",
            "timestamp": "1",
            "port": 11434,
            "proto": "tcp",
            "rec_type": "status",
            "data": {"status": "open"},
        }
    )
    + "\n"
    + json.dumps(
        {
            "ip": "10.1.0.6",
            "timestamp": "2",
            "port": 8000,
            "proto": "tcp",
            "rec_type": "status",
            "data": {"status": "open"},
        }
    )
    + "\n"
)

NMAP_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE nmaprun>
<nmaprun scanner="nmap" args="nmap -sT -p 11434,8000 10.1.0.0/24" version="7.93">
<host><status state="up"/><address addr="10.1.0.5" addrtype="ipv4"/>
<ports><port protocol="tcp" portid="11434"><state state="open" reason="syn-ack"/>
<service name="unknown"/></port>
<port protocol="tcp" portid="8000"><state state="closed" reason="conn-refused"/></port></ports></host>
<host><status state="up"/><address addr="aa:bb:cc:dd:ee:ff" addrtype="mac"/>
<address addr="10.1.0.6" addrtype="ipv4"/>
<ports><port protocol="tcp" portid="8000"><state state="open" reason="syn-ack"/></port></ports></host>
<runstats><finished time="1"/></runstats>
</nmaprun>
"""

NMAP_GREPABLE = """# Nmap 7.93 scan initiated Mon Nov 30 04:00:00 2026 as: nmap -sT -oG - 10.1.0.0/24
Host: 10.1.0.5 ()\tStatus: Up
Host: 10.1.0.5 ()\tPorts: 11434/open/tcp//unknown///, 8000/closed/tcp//http-alt///
Host: 10.1.0.6 (box.lan)\tStatus: Up
Host: 10.1.0.6 (box.lan)\tPorts: 8000/open/tcp//http-alt///
Host: 10.1.0.9 ()\tStatus: Up
# Nmap done at Mon Nov 30 04:00:01 2026 -- 256 IP addresses (3 hosts up) scanned in 1.00 seconds
"""

MASSCAN_GREPABLE = """# Masscan 1.3.2 scan initiated Mon Nov 30 04:00:00 2026
# Ports scanned: TCP(2;8000-8000,11434-11434) UDP(0;) SCTP(0;) PROTOCOLS(0;)
Timestamp: 1700000000\tHost: 10.1.0.5 ()\tPorts: 11434/open/tcp//unknown//
Timestamp: 1700000001\tHost: 10.1.0.6 ()\tPorts: 8000/open/tcp//unknown//
# Masscan done at Mon Nov 30 04:00:01 2026
"""


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (MASSCAN_LIST, "masscan-list"),
        (MASSCAN_JSON, "masscan-json"),
        (MASSCAN_NDJSON, "masscan-json"),
        (NMAP_XML, "xml"),
        (NMAP_XML.replace('scanner="nmap"', 'scanner="masscan"'), "xml"),
        (MASSCAN_GREPABLE, "grepable"),
    ],
)
def test_scanner_output_files_are_detected_and_read(tmp_path: Path, content: str, kind: str) -> None:
    assert sniff_format(content[:8192]) == kind
    path = tmp_path / "scan.out"
    path.write_text(content)
    ts = TargetSet(files=[str(path)], ports=(9999,))
    assert endpoints(ts) == ["10.1.0.5:11434", "10.1.0.6:8000"]


def test_nmap_grepable_ping_only_hosts_get_the_port_list(tmp_path: Path) -> None:
    path = tmp_path / "scan.gnmap"
    path.write_text(NMAP_GREPABLE)
    assert sniff_format(NMAP_GREPABLE) == "grepable"
    assert endpoints(TargetSet(files=[str(path)], ports=(11434,))) == [
        "10.1.0.5:11434",
        "10.1.0.6:8000",
        "10.1.0.9:11434",
    ]


def test_file_targets_respect_exclusions(tmp_path: Path) -> None:
    path = tmp_path / "scan.xml"
    path.write_text(NMAP_XML)
    ts = TargetSet(files=[str(path)], exclusions=Exclusions(["10.1.0.6"]))
    assert endpoints(ts) == ["10.1.0.5:11434"]


def test_broken_xml_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "scan.xml"
    path.write_text('<?xml version="1.0"?><nmaprun><host><address addr="10.0.0.1"')
    with pytest.raises(InputError, match="bad XML"):
        list(TargetSet(files=[str(path)]))


def test_large_masscan_list_is_read_lazily(tmp_path: Path) -> None:
    path = tmp_path / "big.lst"
    with path.open("w") as out:
        out.write("#masscan\n")
        for i in range(200_000):
            out.write(f"open tcp 11434 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255} 1700000000\n")
    tracemalloc.start()
    first = list(itertools.islice(iter(TargetSet(files=[str(path)])), 3))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [t.endpoint for t in first] == ["10.0.0.0:11434", "10.0.0.1:11434", "10.0.0.2:11434"]
    assert peak < 1024 * 1024
