"""Model names are parsed, defaulted, validated and compared the way Ollama's server does it."""

from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollama_guard.ollama.names import (
    DEFAULT_HOST,
    DEFAULT_NAMESPACE,
    DEFAULT_TAG,
    InvalidModelName,
    ModelName,
    canonical_model_name,
    digest_to_blob_filename,
    is_valid_digest,
    parse_model_name,
    same_model,
    try_parse_model_name,
)

PART80 = "8" * 80
PART350 = "3" * 350


@pytest.mark.parametrize(
    ("text", "host", "namespace", "model", "tag", "scheme"),
    [
        ("llama3", DEFAULT_HOST, DEFAULT_NAMESPACE, "llama3", DEFAULT_TAG, None),
        ("llama3:8b", "registry.ollama.ai", "library", "llama3", "8b", None),
        ("jmorgan/llama3", "registry.ollama.ai", "jmorgan", "llama3", "latest", None),
        (
            "registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
            "registry.ollama.ai",
            "library",
            "dolphin-mistral",
            "7b-v2.6-dpo-laser-q6_K",
            None,
        ),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "hf.co",
            "bartowski",
            "Llama-3.2-1B-Instruct-GGUF",
            "Q4_K_M",
            None,
        ),
        ("host:5000/ns/model:tag", "host:5000", "ns", "model", "tag", None),
        ("host:5000/ns/model", "host:5000", "ns", "model", "latest", None),
        ("http://10.0.0.5:8443/attacker/leak:v1", "10.0.0.5:8443", "attacker", "leak", "v1", "http"),
        ("https://registry.example.com/ns/m", "registry.example.com", "ns", "m", "latest", "https"),
        ("HTTP://h/n/m:t", "h", "n", "m", "t", "http"),
        ("host:https/namespace/model:tag", "host:https", "namespace", "model", "tag", None),
        ("_why/_the/_lucky:_stiff", "_why", "_the", "_lucky", "_stiff", None),
        ("h/nn/mm:t", "h", "nn", "mm", "t", None),
        (f"{PART350}/{PART80}/{PART80}:{PART80}", PART350, PART80, PART80, PART80, None),
        ("  llama3:8b\n", "registry.ollama.ai", "library", "llama3", "8b", None),
    ],
)
def test_parse_applies_ollama_defaults_and_splits_parts(text, host, namespace, model, tag, scheme):
    name = parse_model_name(text)
    assert (name.host, name.namespace, name.model, name.tag, name.scheme) == (
        host,
        namespace,
        model,
        tag,
        scheme,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "mm:",
        "n/m:",
        "/nn/mm",
        "//",
        "//mm",
        "hh//",
        "@",
        "m@d",
        "^",
        "-hh/nn/mm:tt",
        "hh/-nn/mm:tt",
        "hh/nn/-mm:tt",
        "hh/nn/mm:-tt",
        "host/name:space/model:tag",  # colon in a non-host part
        "host/name.space/model:tag",  # dot in the namespace
        "a/b/c/d:e",  # too many parts: host would contain '/'
        "../../etc/passwd",
        "model:../x",
        "lläma",  # non-ASCII
        "m" * 81,
        "m:" + "t" * 81,
        "h" * 351 + "/n/m:t",
        "ftp://host/ns/m:t",  # scheme other than http/https
        "://host/ns/m:t",
        "m:cloud:local",  # two source suffixes
        "m:8b-cloud:cloud",
        "model with space",
    ],
)
def test_invalid_names_are_rejected(text):
    with pytest.raises(InvalidModelName):
        parse_model_name(text)
    assert try_parse_model_name(text) is None


def test_non_string_is_rejected():
    with pytest.raises(InvalidModelName):
        parse_model_name(None)  # type: ignore[arg-type]
    assert try_parse_model_name(42) is None


@pytest.mark.parametrize(
    "variant",
    [
        "llama3",
        "LLAMA3",
        "Llama3:Latest",
        "library/llama3",
        "registry.ollama.ai/library/llama3:latest",
        "REGISTRY.OLLAMA.AI/LIBRARY/LLAMA3:LATEST",
        "https://registry.ollama.ai/library/llama3",
        "llama3:local",
    ],
)
def test_case_and_defaults_do_not_change_identity(variant):
    assert canonical_model_name(variant) == "registry.ollama.ai/library/llama3:latest"
    assert same_model(variant, "llama3:latest")


def test_different_models_have_different_identities():
    assert not same_model("llama3", "llama3:8b")
    assert not same_model("llama3", "evil/llama3")
    assert not same_model("llama3", "hf.co/library/llama3")
    assert not same_model("llama3", "not a name")


def test_display_is_the_short_form_ollama_lists():
    assert parse_model_name("registry.ollama.ai/library/llama3:latest").display() == "llama3:latest"
    assert parse_model_name("jmorgan/m").display() == "jmorgan/m:latest"
    assert parse_model_name("hf.co/org/m").display() == "hf.co/org/m:latest"
    assert parse_model_name("http://1.2.3.4:5000/library/m:t").display() == "1.2.3.4:5000/library/m:t"
    assert str(parse_model_name("Llama3")) == "Llama3:latest"


def test_manifest_relpath_keeps_case_and_round_trips():
    name = parse_model_name("hf.co/Org/Model:Q4_K_M")
    assert name.manifest_relpath() == PurePosixPath("hf.co/Org/Model/Q4_K_M")
    back = ModelName.from_manifest_relpath(name.manifest_relpath())
    assert back.canonical() == name.canonical()
    assert parse_model_name("llama3").manifest_relpath() == PurePosixPath(
        "registry.ollama.ai/library/llama3/latest"
    )


@pytest.mark.parametrize("relpath", ["a/b/c", "a/b/c/d/e", "h/n/m/../x", "h/n.x/m/t", "h/n/m/-t"])
def test_manifest_relpath_must_be_a_valid_four_part_name(relpath):
    with pytest.raises(InvalidModelName):
        ModelName.from_manifest_relpath(relpath)


@pytest.mark.parametrize(
    ("text", "display"),
    [
        ("gpt-oss:20b:cloud", "gpt-oss:20b-cloud"),
        ("gpt-oss:20b-cloud", "gpt-oss:20b-cloud"),
        ("gpt-oss:20B-CLOUD", "gpt-oss:20B-cloud"),
        ("qwen3-coder:480b:Cloud", "qwen3-coder:480b-cloud"),
        ("deepseek-v3.1:cloud", "deepseek-v3.1:cloud"),
        ("llama3: cloud", "llama3:cloud"),
        ("hf.co/org/m:cloud", "hf.co/org/m:cloud"),
    ],
)
def test_cloud_references_are_recognised_in_their_stored_form(text, display):
    name = parse_model_name(text)
    assert name.is_cloud
    assert name.display() == display


@pytest.mark.parametrize(
    "text",
    ["llama3", "llama3:latest", "cloudy:7b", "my-cloud", "host:5000/ns/m-cloud", "m:cloudx", "m:local"],
)
def test_local_names_are_not_cloud(text):
    assert not parse_model_name(text).is_cloud


def test_cloud_and_local_spellings_of_one_model_share_identity():
    assert same_model("gpt-oss:20b:cloud", "gpt-oss:20b-cloud")
    assert not same_model("gpt-oss:20b:cloud", "gpt-oss:20b")
    assert same_model("gpt-oss:20b:local", "gpt-oss:20b")


@pytest.mark.parametrize(
    ("digest", "valid"),
    [
        ("sha256:" + "a" * 64, True),
        ("sha256-" + "0123456789abcdefABCDEF" + "0" * 42, True),
        ("sha256:" + "a" * 63, False),
        ("sha256:" + "a" * 65, False),
        ("sha256:" + "g" * 64, False),
        ("sha512:" + "a" * 64, False),
        ("SHA256:" + "a" * 64, False),
        ("sha256:" + "a" * 64 + "\n", False),
        ("sha256:00", False),
        ("../../../../etc/passwd", False),
        ("", False),
        (None, False),
    ],
)
def test_digest_validation_matches_ollama_regex(digest, valid):
    assert is_valid_digest(digest) is valid


def test_digest_to_blob_filename():
    assert digest_to_blob_filename("sha256:" + "b" * 64) == "sha256-" + "b" * 64
    with pytest.raises(ValueError):
        digest_to_blob_filename("sha256:../x")


_alnum = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_rest = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _part(extra: str = "", max_size: int = 20):
    chars = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-" + extra)
    return st.builds(lambda a, b: a + b, _alnum, st.text(chars, max_size=max_size))


@given(
    host=_part(".:"),
    namespace=_part(""),
    model=_part("."),
    tag=_part("."),
)
def test_any_valid_full_name_round_trips(host, namespace, model, tag):
    text = f"{host}/{namespace}/{model}:{tag}"
    name = try_parse_model_name(text)
    if tag.lower() == "local" or tag.lower() == "cloud" or tag.lower().endswith("-cloud"):
        return  # source suffixes are rewritten; covered above
    assert name is not None
    assert (name.host, name.namespace, name.model, name.tag) == (host, namespace, model, tag)
    assert parse_model_name(name.full()).canonical() == name.canonical()
    assert parse_model_name(text.upper()).canonical() == name.canonical()


@given(st.text(max_size=40))
def test_parser_never_crashes_and_accepted_names_are_safe_paths(text):
    name = try_parse_model_name(text)
    if name is None:
        return
    for part in name.manifest_relpath().parts:
        assert part not in ("", ".", "..")
        assert "/" not in part and "\\" not in part
        assert part.isascii()
