"""Ollama version strings parse and order the way releases were made."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollama_guard.ollama.versions import InvalidVersion, OllamaVersion, parse_version, try_parse_version


def v(s: str) -> OllamaVersion:
    return parse_version(s)


def test_v_prefix_and_whitespace_are_ignored():
    assert v("v0.1.33") == v("0.1.33") == v(" 0.1.33\n") == v("V0.1.33")
    assert hash(v("v0.1.33")) == hash(v("0.1.33"))


def test_release_order():
    ordered = ["0.0.1", "0.0.20", "0.1.9", "0.1.10", "0.1.33", "0.1.34", "0.2.0", "0.10.0", "1.0.0"]
    assert sorted(map(v, reversed(ordered))) == list(map(v, ordered))
    assert v("0.1.10") > v("0.1.9")  # numeric, not lexical


def test_release_candidates_come_before_the_release():
    assert v("0.5.0-rc2") < v("0.5.0")
    assert v("0.5.0-rc0") < v("0.5.0-rc1") < v("0.5.0-rc2") < v("0.5.0-rc10")  # rc10 is numeric
    assert v("0.1.33") < v("0.1.34-rc1") < v("0.1.34")
    assert v("0.4.0-ci1") < v("0.4.0")
    assert v("0.4.0-ci1").is_prerelease and not v("0.4.0").is_prerelease


def test_git_describe_builds_sit_between_tags():
    assert v("0.5.7-0-gabc1234") == v("0.5.7")  # exactly at the tag
    assert v("0.5.7") < v("0.5.7-3-gabc1234") < v("0.5.8-rc0")
    assert v("0.5.7-3-gabc1234-dirty").dirty
    assert v("0.5.8-rc1-2-g1234567") > v("0.5.8-rc1")
    assert v("0.5.8-rc1-2-g1234567") < v("0.5.8")


def test_build_metadata_is_ignored_in_comparisons():
    assert v("0.6.5+linux.amd64") == v("0.6.5")
    assert str(v("0.6.5+linux.amd64")) == "0.6.5+linux.amd64"


def test_dev_build_is_newest_and_flagged():
    dev = v("0.0.0")
    assert dev.is_dev
    assert dev > v("99.99.99")
    assert dev == v("v0.0.0")
    assert not v("0.0.1").is_dev


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "0.1",
        "1",
        "1.2.3.4",
        "01.2.3",
        "0.01.2",
        "0.1.33 x",
        "0.1.33-",
        "0.1.33-rc-1",
        "latest",
        "0.1.x",
        "-0.1.3",
        "0.1.3-rc1-abc",
        "0.1.3+",
        "ollama version is 0.6.5",
        "1" * 20 + ".0.0",
    ],
)
def test_garbage_is_invalid(text):
    with pytest.raises(InvalidVersion):
        parse_version(text)
    assert try_parse_version(text) is None


def test_non_string_is_invalid():
    with pytest.raises(InvalidVersion):
        parse_version(12)  # type: ignore[arg-type]
    assert try_parse_version(None) is None


def test_str_round_trips():
    for text in ["0.1.33", "0.5.0-rc2", "0.4.0-ci1", "0.5.7-3-gabc1234-dirty", "0.12.7-citest0"]:
        assert str(v(text)) == text
        assert v(str(v(text))) == v(text)


def test_comparison_with_other_types_is_not_supported():
    assert (v("0.1.0") == "0.1.0") is False
    with pytest.raises(TypeError):
        _ = v("0.1.0") < "0.2.0"  # type: ignore[operator]


_num = st.integers(min_value=0, max_value=500)


@given(_num, _num, _num, _num, _num, _num)
def test_order_matches_tuple_order_for_releases(a, b, c, d, e, f):
    x, y = (a, b, c), (d, e, f)
    if x == (0, 0, 0) or y == (0, 0, 0):
        return  # dev builds sort last by design
    vx, vy = v(".".join(map(str, x))), v(".".join(map(str, y)))
    assert (vx < vy) == (x < y)
    assert (vx == vy) == (x == y)


@given(_num, _num, st.integers(min_value=1, max_value=500), st.integers(min_value=0, max_value=30))
def test_any_prerelease_is_between_previous_and_its_release(a, b, c, rc):
    release = v(f"{a}.{b}.{c}")
    pre = v(f"{a}.{b}.{c}-rc{rc}")
    previous = v(f"{a}.{b}.{c - 1}")
    if previous.is_dev:
        return
    assert previous < pre < release
