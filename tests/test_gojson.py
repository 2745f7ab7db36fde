"""The gateway reads request bodies the way Go's encoding/json (Ollama) does, and refuses what Go would
read differently from Python."""

import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ollama_guard.ollama.gojson import (
    BodyError,
    ambiguous_fields,
    go_field_for,
    go_fold,
    go_view,
    keys_folding_to,
    parse_body,
)

# Unicode simple-case-folding orbits Go's unicode.SimpleFold walks (the non-trivial ones a key could use
# to dodge a case-sensitive filter), plus two letters that must stay alone.
ORBITS = [
    "Kk\u212a",  # Kelvin sign
    "Ss\u017f",  # long s
    "\u00b5\u039c\u03bc",  # micro sign, Greek capital/small mu
    "\u00c5\u00e5\u212b",  # Angstrom sign
    "\u00df\u1e9e",  # sharp s and capital sharp s (no ASCII "ss")
    "\u01c4\u01c5\u01c6",  # DŽ Dž dž
    "\u0345\u0399\u03b9\u1fbe",  # ypogegrammeni, iota, prosgegrammeni
    "\u0398\u03b8\u03d1\u03f4",  # theta variants
    "\u03a3\u03c2\u03c3",  # sigma, final sigma
    "\u03a9\u03c9\u2126",  # omega, ohm sign
    "\u0412\u0432\u1c80",  # Cyrillic ve, rounded ve
    "\u1e60\u1e61\u1e9b",  # S/s with dot above, long s with dot above
    "Ii",
    "\u0130",  # İ: Turkic only — folds to nothing else in Go
    "\u0131",  # ı: likewise
]
_ORBIT_OF = {ch: i for i, orbit in enumerate(ORBITS) for ch in orbit}


def test_fold_examples_from_go():
    assert go_fold("stream") == go_fold("STREAM") == go_fold("Stream") == go_fold("\u017ftream")
    assert go_fold("model") == go_fold("MODEL") == go_fold("mOdEl")
    assert go_fold("\u212a") == go_fold("k") == go_fold("K")
    assert go_fold("keep_alive") == go_fold("\u212aeep_alive")
    assert go_fold("insecure") == go_fold("in\u017fecure")
    assert go_fold("model") != go_fold("mode1")
    assert go_fold("i") != go_fold("\u0130") and go_fold("i") != go_fold("\u0131")
    assert go_fold("ss") != go_fold("\u00df")  # simple folding never changes length
    assert go_fold("model_name") != go_fold("model-name") != go_fold("modelname")


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=12), st.data())
def test_ascii_keys_fold_equal_iff_equal_ignoring_ascii_case(a, data):
    b = data.draw(
        st.one_of(
            st.just(a.swapcase()),
            st.just(a.upper()),
            st.text(alphabet=st.characters(max_codepoint=127), max_size=12),
        )
    )
    assert (go_fold(a) == go_fold(b)) == (a.lower() == b.lower())


_orbit_chars = "".join(ORBITS)


@given(st.text(alphabet=_orbit_chars, max_size=8), st.text(alphabet=_orbit_chars, max_size=8))
def test_special_letters_fold_equal_iff_in_the_same_orbit(a, b):
    same = len(a) == len(b) and all(_ORBIT_OF[x] == _ORBIT_OF[y] for x, y in zip(a, b, strict=True))
    assert (go_fold(a) == go_fold(b)) is same


@given(st.text(max_size=20))
def test_fold_is_idempotent_and_length_preserving(s):
    assume(all(not 0xD800 <= ord(c) <= 0xDFFF for c in s))
    folded = go_fold(s)
    assert len(folded) == len(s)
    assert go_fold(folded) == folded
    assert go_fold(s.upper()) == folded or not s.isascii()


# --- parse_body ------------------------------------------------------------------------------------------

_json_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**18), max_value=10**18),
    st.floats(allow_nan=False, allow_infinity=False),
    _json_text,
)
_json_value = st.recursive(
    _json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_json_text, children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150)
@given(st.dictionaries(_json_text, _json_value, max_size=8), st.booleans(), st.booleans())
def test_parse_body_round_trips_any_json_object(obj, ensure_ascii, indent):
    raw = json.dumps(obj, ensure_ascii=ensure_ascii, indent=2 if indent else None).encode()
    pairs = parse_body(raw, max_depth=64)
    assert pairs == list(obj.items())


def test_duplicates_and_case_variants_are_kept_in_order():
    pairs = parse_body(b'{"model":"a","Model":"b","model":"c"}')
    assert pairs == [("model", "a"), ("Model", "b"), ("model", "c")]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["model", "MODEL", "Model", "mOdEl", "name", "NAME", "other"]),
            st.text(max_size=5),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_go_view_takes_the_last_key_folding_to_each_field(pairs):
    view = go_view(pairs, ["model", "name"])
    for field in ("model", "name"):
        hits = [v for k, v in pairs if k.lower() == field]
        if hits:
            assert view[field] == hits[-1]
        else:
            assert field not in view
    assert "other" not in view
    counts = {f: sum(1 for k, _ in pairs if k.lower() == f) for f in ("model", "name")}
    assert ambiguous_fields(pairs, ["model", "name"]) == {f for f, c in counts.items() if c > 1}


def test_go_view_with_unicode_fold_variants():
    body = '{"model":"allowed","MODE\u212a":"x","\u017ftream":true,"mode\u029f":"not-a-fold"}'.encode()
    pairs = parse_body(body)
    # "MODEK" does not fold to "model"; "ſtream" folds to "stream".
    assert go_view(pairs, ["model", "stream"]) == {"model": "allowed", "stream": True}
    pairs = parse_body('{"model":"allowed","MODE\u029f":"evil","Model":"evil2"}'.encode())
    assert go_view(pairs, ["model"])["model"] == "evil2"
    assert ambiguous_fields(pairs, ["model"]) == {"model"}
    assert keys_folding_to(pairs, "model") == ["model", "Model"]


def test_exact_name_wins_over_fold_and_first_field_wins_among_folds():
    assert go_field_for("Model", ["model", "Model"]) == "Model"
    assert go_field_for("MODEL", ["model", "Model"]) == "model"
    assert go_field_for("unknown", ["model"]) is None


def test_null_leaves_non_pointer_fields_alone():
    pairs = parse_body(b'{"model":"llama3","MODEL":null,"stream":false,"Stream":null}')
    view = go_view(pairs, ["model", "stream"], nullable={"stream"})
    assert view == {"model": "llama3", "stream": None}
    assert go_view(parse_body(b'{"model":null}'), ["model"]) == {}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \n",
        b"null",
        b"[]",
        b'"model"',
        b"42",
        b"{",
        b'{"model":"a",}',
        b"{'model':'a'}",
        b'{"model":"a"}{"model":"b"}',  # Go's stream decoder would read only the first
        b'{"model":"a"} x',
        b'{"n":NaN}',
        b'{"n":Infinity}',
        b'{"n":-Infinity}',
        b'{"n":[1,2,NaN]}',
        b'{"model":"\\ud800"}',  # lone high surrogate: Go turns it into U+FFFD
        b'{"\\udc00model":"a"}',
        b'{"x":{"y":["\\udbff"]}}',
        b"\xef\xbb\xbf{}",  # UTF-8 BOM
        b'{"model":"a\x01"}',  # raw control character
        b'{"n":' + b"1" * 5000 + b"}",
    ],
)
def test_bodies_go_could_read_differently_are_rejected(raw):
    with pytest.raises(BodyError):
        parse_body(raw)


def test_surrogate_pairs_are_fine():
    assert parse_body(b'{"e":"\\ud83d\\ude00"}') == [("e", "\U0001f600")]


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff",
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\x80",
        b"\xc3",
        b"\xf0\x9f\x98",
    ],
)
def test_invalid_utf8_is_rejected(bad):
    with pytest.raises(BodyError, match="UTF-8"):
        parse_body(b'{"model":"' + bad + b'"}')


@given(
    st.text(max_size=10).filter(lambda s: all(not 0xD800 <= ord(c) <= 0xDFFF for c in s)),
    st.sampled_from(
        [b"\xff", b"\xfe", b"\x80", b"\xc0\x80", b"\xed\xb0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80"]
    ),
    st.integers(min_value=0, max_value=10),
)
def test_invalid_utf8_anywhere_always_raises(text, bad, where):
    encoded = json.dumps({"k": text}).encode()
    pos = min(where, len(encoded))
    with pytest.raises(BodyError):
        parse_body(encoded[:pos] + bad + encoded[pos:])


def _nested(depth: int) -> bytes:
    # top-level object (depth 1) containing depth-1 nested arrays
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_depth_limit_boundary():
    assert parse_body(_nested(32))[0][0] == "a"
    with pytest.raises(BodyError, match="deeper"):
        parse_body(_nested(33))
    assert parse_body(_nested(5), max_depth=5)
    with pytest.raises(BodyError):
        parse_body(_nested(6), max_depth=5)
    with pytest.raises(BodyError):
        parse_body(b'{"a":{"b":{"c":{}}}}', max_depth=3)


def test_pathologically_deep_body_is_rejected_not_crashing():
    with pytest.raises(BodyError):
        parse_body(b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}")


def test_floats_and_big_ints_parse_like_json():
    pairs = parse_body(b'{"t":0.5,"n":-0,"e":1e308,"big":123456789012345678901234567890}')
    assert dict(pairs)["t"] == 0.5 and dict(pairs)["big"] == 123456789012345678901234567890
    assert math.isfinite(dict(pairs)["e"])


def test_str_input_is_a_programming_error():
    with pytest.raises(TypeError):
        parse_body('{"a":1}')  # type: ignore[arg-type]
