"""Text as a reader (and a model) sees it: compatibility forms folded (NFKC: full-width letters, ligatures),
look-alike letters of other scripts folded to Latin, invisible characters removed, letter-spaced words
closed up, HTML/C comments inside words removed, and short Base64 runs decoded so their text is judged too.

Each step records what it found (`Normalised.signs`), because the disguise is itself evidence."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass, field

# Cyrillic, Greek and other letters that render like Latin ones (Unicode confusables, letters only).
_CONFUSABLES = {
    "а": "a",
    "в": "b",
    "е": "e",
    "ё": "e",
    "к": "k",
    "м": "m",
    "н": "h",
    "о": "o",
    "р": "p",
    "с": "c",
    "т": "t",
    "у": "y",
    "х": "x",
    "ѕ": "s",
    "і": "i",
    "ї": "i",
    "ј": "j",
    "ԁ": "d",
    "ԛ": "q",
    "ԝ": "w",
    "ɡ": "g",
    "һ": "h",
    "ӏ": "l",
    "А": "A",
    "В": "B",
    "Е": "E",
    "К": "K",
    "М": "M",
    "Н": "H",
    "О": "O",
    "Р": "P",
    "С": "C",
    "Т": "T",
    "Х": "X",
    "Ѕ": "S",
    "І": "I",
    "Ј": "J",
    "α": "a",
    "ο": "o",
    "ρ": "p",
    "ν": "v",
    "ι": "i",
    "κ": "k",
    "τ": "t",
    "υ": "u",
    "χ": "x",
    "Α": "A",
    "Β": "B",
    "Ε": "E",
    "Ζ": "Z",
    "Η": "H",
    "Ι": "I",
    "Κ": "K",
    "Μ": "M",
    "Ν": "N",
    "Ο": "O",
    "Ρ": "P",
    "Τ": "T",
    "Υ": "Y",
    "Χ": "X",
    "ı": "i",
    "ℓ": "l",
    "ⅰ": "i",
    "ꓲ": "I",
    "ɑ": "a",
    "ꮃ": "w",
}
_CONFUSABLE_TABLE = str.maketrans(_CONFUSABLES)
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)
_EMOJI_JOINERS = re.compile("([\u2190-\u2bff\U0001f000-\U0001faff])[\ufe0e\ufe0f\u200d]+")
_TAG_CHARS = re.compile("[\U000e0020-\U000e007e]+")
_INNER_COMMENT = re.compile(r"(?<=\w)(?:<!--.*?-->|/\*.*?\*/)(?=\w)", re.S)
# five or more single letters separated by one space, dot, dash or underscore: "i g n o r e"
_SPACED = re.compile(r"(?<![\w])(?:\w[ .\-_·]){4,}\w(?![\w])")
_SPACED_WORDS = re.compile(r"(?:\w[ .\-_·]){2,}\w(?:\s{2,}|(?=$))")
_B64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_HEX_RUN = re.compile(r"(?:\\x[0-9a-fA-F]{2}){4,}|(?:\\u[0-9a-fA-F]{4}){4,}")


@dataclass
class Normalised:
    text: str
    signs: list[str] = field(default_factory=list)
    decoded: list[str] = field(default_factory=list)


def _scripts(word: str) -> set[str]:
    out = set()
    for ch in word:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            out.add(name.split(" ")[0] if name else "?")
    return out


def normalise(text: str) -> Normalised:
    signs: list[str] = []
    tags = "".join(chr(ord(c) - 0xE0000) for c in "".join(_TAG_CHARS.findall(text)))
    if tags:
        signs.append("unicode-tag-characters")
    bare = _EMOJI_JOINERS.sub(r"\1", text)  # ⚠️, 👨‍💻: variation selector / joiner after a symbol is emoji
    if _INVISIBLE.search(bare):
        signs.append("invisible-characters")
    text = _INVISIBLE.sub("", text)
    folded = unicodedata.normalize("NFKC", text)
    if folded != text and any(0xFF01 <= ord(c) <= 0xFF5E for c in text):
        signs.append("full-width-text")
    text = folded
    for word in re.findall(r"\w+", text):
        scripts = _scripts(word)
        if "LATIN" in scripts and scripts & {"CYRILLIC", "GREEK"}:
            signs.append("mixed-script-word")
            break
    confused = text.translate(_CONFUSABLE_TABLE)
    if confused != text and "mixed-script-word" in signs:
        text = confused
    stripped = _INNER_COMMENT.sub("", text)
    if stripped != text:
        signs.append("comment-inside-word")
        text = stripped
    text, spaced = _SPACED.subn(lambda m: re.sub(r"[ .\-_·]", "", m.group(0)), text)
    if spaced:
        signs.append("letter-spacing")
    decoded: list[str] = []
    if tags:
        decoded.append(tags)
    for run in _B64.findall(text):
        plain = decode_base64(run)
        if plain:
            decoded.append(plain)
    if decoded:
        if any(not t == tags for t in decoded):
            signs.append("base64-text")
        text = text + "\n" + "\n".join(decoded)
    return Normalised(text, signs, decoded)


def decode_base64(run: str) -> str | None:
    """The text a Base64 run decodes to, when it is mostly printable words (not a hash or an id)."""
    if len(run) > 65536:
        return None
    padded = run + "=" * (-len(run) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        plain = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(ch.isalpha() or ch == " " for ch in plain)
    if len(plain) < 8 or letters < 0.8 * len(plain) or " " not in plain.strip():
        return None
    return plain


def visible(text: str) -> str:
    """Invisible and control characters shown as <U+XXXX> so a reviewer can see them."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in "\n\t":
            out.append(ch)
        elif code < 0x20 or 0x7F <= code < 0xA0 or _INVISIBLE.match(ch):
            out.append(f"<U+{code:04X}>")
        else:
            out.append(ch)
    return "".join(out)
