"""The syntaxes the audit reads, judged the way Ollama, systemd, pam_env and Compose read them."""

from __future__ import annotations

import pytest

from ollama_guard.audit.envsyntax import (
    environment_assignments,
    parse_pam_environment,
    parse_systemd_env_file,
    parse_unit_file,
    systemd_words,
)
from ollama_guard.audit.fixes import systemd_quote
from ollama_guard.audit.hostspec import (
    is_exposed,
    judge_origins,
    ollama_bool,
    parse_hosts_file,
    parse_ollama_host,
)
from ollama_guard.audit.sources.compose import image_version, parse_port_spec


@pytest.mark.parametrize(
    ("raw", "host", "port", "exposed"),
    [
        (None, "127.0.0.1", 11434, False),
        ("", "127.0.0.1", 11434, False),
        ("0.0.0.0", "0.0.0.0", 11434, True),
        ("0.0.0.0:11434", "0.0.0.0", 11434, True),
        (":11434", "", 11434, True),
        ("[::]:11434", "::", 11434, True),
        ("::", "::", 11434, True),
        ("http://0.0.0.0", "0.0.0.0", 80, True),  # a scheme makes the default port 80
        ("https://127.0.0.1", "127.0.0.1", 443, False),
        ("http://[::]:8080/some/path", "::", 8080, True),
        ("localhost:8080", "localhost", 8080, False),
        ("127.0.0.2", "127.0.0.2", 11434, False),
        ("::1", "::1", 11434, False),
        ("[::1]", "::1", 11434, False),
        ("192.168.1.10:11434", "192.168.1.10", 11434, True),
        ("gpu-box:11434", "gpu-box", 11434, True),
        ('"0.0.0.0:11434"', "0.0.0.0", 11434, True),  # envconfig.Var strips quotes
        ("  '0.0.0.0'  ", "0.0.0.0", 11434, True),
        ("0.0.0.0:99999", "0.0.0.0", 11434, True),  # invalid port → default port
        ("ollama.com", "ollama.com", 443, True),
        ("10.0.0.5:", "10.0.0.5", 11434, True),  # empty port → default
    ],
)
def test_ollama_host_follows_envconfig_host(raw: str | None, host: str, port: int, exposed: bool) -> None:
    bind = parse_ollama_host(raw)
    assert (bind.host, bind.port) == (host, port)
    assert is_exposed(bind) is exposed


def test_hostname_is_loopback_only_when_hosts_file_says_so() -> None:
    hosts = parse_hosts_file("127.0.0.1 localhost\n127.0.1.1 box box.lan # comment\n192.168.1.4 nas\n")
    assert not is_exposed(parse_ollama_host("box:11434"), hosts)
    assert is_exposed(parse_ollama_host("nas:11434"), hosts)
    assert is_exposed(parse_ollama_host("unknown-name"), hosts)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, False),
        ("", False),
        ("1", True),
        ("true", True),
        ("yes", True),
        ("0", False),
        ("False", False),
        ('"1"', True),
        ("off", True),
    ],
)
def test_ollama_bool_treats_unparsable_as_true(raw: str | None, expected: bool) -> None:
    assert ollama_bool(raw) is expected


def test_origins_verdict() -> None:
    v = judge_origins("https://chat.example.com,*, http://localhost:*")
    assert v.any_origin == ["*"]
    assert v.safe_value == "https://chat.example.com,http://localhost:*"
    assert v.scoped_wildcards == ["http://localhost:*"]
    assert judge_origins("http://*").any_origin == ["http://*"]
    assert judge_origins('"*"').any_origin == ["*"]
    assert judge_origins("https://*.example.com").any_origin == []
    assert judge_origins(None).any_origin == []


def test_systemd_words_quoting() -> None:
    assert systemd_words('OLLAMA_HOST=0.0.0.0 OLLAMA_ORIGINS="*"') == [
        "OLLAMA_HOST=0.0.0.0",
        "OLLAMA_ORIGINS=*",
    ]
    assert systemd_words('"VAR1=word1 word2" VAR2=word3 "VAR3=$word 5 6"') == [
        "VAR1=word1 word2",
        "VAR2=word3",
        "VAR3=$word 5 6",
    ]
    assert systemd_words("A='x y'z") == ["A=x yz"]
    assert systemd_words(r'A=\x41\x42 B="q\"q"') == ["A=AB", 'B=q"q']
    assert systemd_words("A=100%%") == ["A=100%"]
    assert systemd_words('A="open') is None


def test_environment_assignments_drop_invalid_names() -> None:
    assert environment_assignments("1BAD=x GOOD=y novalue") == [("GOOD", "y")]
    assert environment_assignments("") == []


def test_unit_file_sections_comments_and_continuations() -> None:
    text = (
        "[Unit]\nDescription=x\n# Environment=OLLAMA_HOST=0.0.0.0\n"
        "[Service]\n; comment\nEnvironment=A=1 \\\n  B=2\n"
    )
    items = [(a.section, a.key, a.line) for a in parse_unit_file(text)]
    assert items == [("Unit", "Description", 2), ("Service", "Environment", 6)]
    assert environment_assignments(parse_unit_file(text)[1].value) == [("A", "1"), ("B", "2")]


def test_systemd_env_file() -> None:
    text = (
        "# comment\n; also comment\nOLLAMA_HOST='0.0.0.0:11434'\nOLLAMA_ORIGINS=\"a,b\"\n"
        "export OLLAMA_NOPRUNE=1\nPLAIN = value with spaces   \nCONT=one\\\ntwo\n"
    )
    entries = {e.name: (e.value, e.line) for e in parse_systemd_env_file(text)}
    assert entries["OLLAMA_HOST"] == ("0.0.0.0:11434", 3)
    assert entries["OLLAMA_ORIGINS"] == ("a,b", 4)
    assert "OLLAMA_NOPRUNE" not in entries  # systemd does not understand `export`
    assert entries["PLAIN"] == ("value with spaces", 6)
    assert entries["CONT"] == ("onetwo", 7)


def test_pam_environment_accepts_export_and_strips_quotes() -> None:
    entries = {
        e.name: e.value
        for e in parse_pam_environment('export OLLAMA_HOST="0.0.0.0"\nOLLAMA_ORIGINS=*\n#X=1\n')
    }
    assert entries == {"OLLAMA_HOST": "0.0.0.0", "OLLAMA_ORIGINS": "*"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("11434:11434", [("", "11434", 11434, "tcp")]),
        ("0.0.0.0:11434:11434", [("0.0.0.0", "11434", 11434, "tcp")]),
        ("127.0.0.1:11434:11434", [("127.0.0.1", "11434", 11434, "tcp")]),
        ("127.0.0.1::11434", [("127.0.0.1", "", 11434, "tcp")]),
        ("[::1]:8080:11434", [("::1", "8080", 11434, "tcp")]),
        ("11434", [("", "", 11434, "tcp")]),
        (11434, [("", "", 11434, "tcp")]),
        ("11434:11434/udp", [("", "11434", 11434, "udp")]),
        ("11433-11434:11433-11434", [("", "11433-11434", 11433, "tcp"), ("", "11433-11434", 11434, "tcp")]),
        (
            {"target": 11434, "published": "11434", "host_ip": "127.0.0.1"},
            [("127.0.0.1", "11434", 11434, "tcp")],
        ),
        ({"target": 11434, "published": 11434}, [("", "11434", 11434, "tcp")]),
    ],
)
def test_compose_port_syntax(spec: object, expected: list[tuple[str, str, int, str]]) -> None:
    assert parse_port_spec(spec, "") == expected


def test_compose_port_uses_daemon_default_ip() -> None:
    assert parse_port_spec("11434:11434", "127.0.0.1") == [("127.0.0.1", "11434", 11434, "tcp")]


def test_image_version() -> None:
    assert image_version("ollama/ollama:0.6.5") == "0.6.5"
    assert image_version("docker.io/ollama/ollama:0.3.14-rocm") == "0.3.14"
    assert image_version("ollama/ollama:latest") is None
    assert image_version("ollama/ollama") is None
    assert image_version("registry:5000/ollama/ollama:v0.1.30") == "0.1.30"


def test_systemd_quote_round_trips_through_the_parser() -> None:
    for value in ["127.0.0.1:11434", 'we"ird \\ value', "100%", ""]:
        line = systemd_quote("X", value)
        assignment = parse_unit_file(f"[Service]\n{line}\n")[0]
        assert environment_assignments(assignment.value) == [("X", value)]
