"""Links and addresses in the prose a template puts into the prompt, judged by what the sentence does with
them — not by whose they are.

A link or an e-mail address is not suspicious by itself: models' default system prompts name the git
identity to commit with (Devstral: `openhands@all-hands.dev` as `user.email`), vendors add a contact line
or their documentation. What a poisoner needs a link for is one of a few things, each a structure of the
sentence around it:

* **exfiltration** (high): a verb that moves something (send, forward, post, upload, e-mail, cc/bcc,
  include/append/encode …), or the address as the receiver ("gets a copy", "keep … informed"), with
  conversation data or secrets (the conversation, the user's
  messages, answers, API keys, passwords …) in the sentence with the address; any cc/bcc of an address
  (the model's outgoing mail copied); a link that carries data (a placeholder in its query or path, or
  the sentence tells the model to fill it with the user's text); a link rendered without a click
  (Markdown image, reference-style image, `<img src>`);
* **phishing** (high): the user is asked to hand over a secret (password, card number, seed phrase …) at
  or to the address, or to download, install, log in, verify or pay there;
* **remote-instructions** (high): the model is told to fetch instructions, rules or updates from the link
  (or to fetch it and follow/obey/execute what it says) — a second, remotely editable prompt;
* **encoded-link** (high): a link that only appears after decoding (Base64, percent-encoding, `\\x`/`\\u`
  escapes): nothing legitimate hides the address it names;
* **obfuscated-link** (medium): a defanged or spelled-out address ("example dot com", `example[.]com`,
  `name (at) example.com`);
* **many-links** (medium): more addresses than are judged one by one (real templates have a handful);
* **link** (info): any other mention — attribution, documentation, a configured identity, a contact line.
  Listed as evidence so a reviewer sees every address, but not a sign of poisoning.

Text gated by a trigger is judged high whatever it says (see `judge`), so a link under a trigger is caught
there; these rules are for text every conversation gets."""

from __future__ import annotations

import base64
import binascii
import bisect
import re
import urllib.parse
from dataclasses import dataclass

from ollama_guard.findings import Severity

_I = re.IGNORECASE
_L = 0  # sentence patterns: matched against the lower-cased sentence (several times faster than IGNORECASE)
_TLDS = (
    r"(?:com|net|org|io|ai|ru|cn|xyz|top|info|biz|co|me|app|dev|ly|sh|to|cc|tk|example|site|online|"
    r"club|live|pro|tech|store|link|click|su|pw|ws|gg|us|uk|de|fr|jp|in|eu|cloud|zip|mov)"
)
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[a-z0-9](?:[a-z0-9-]{0,62}\.)+[a-z]{2,24}\b", _I)
URL = re.compile(
    r"\b(?:https?|ftp|wss?)://[^\s\"'<>`)}\]]+|\bwww\.[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}[^\s\"'<>`)}\]]*",
    _I,
)
DOMAIN = re.compile(
    r"(?<![\w@./-])[a-z0-9][a-z0-9-]{1,60}(?:\.[a-z0-9-]{1,60})*\."
    + _TLDS
    + r"\b(?![.\w-]*\w)(?:/[^\s\"'<>`)}]*)?",
    _I,
)
OBFUSCATED = re.compile(
    r"\b[a-z0-9][a-z0-9-]{1,60}(?:\s?\[\.\]\s?|\s?\(\.\)\s?|\s(?:dot|\[dot\]|\(dot\))\s)" + _TLDS + r"\b"
    r"|\b[\w.+-]{1,64}\s?(?:\[at\]|\(at\)|\[@\]|\(@\)|\s(?:at)\s(?=[a-z0-9-]{2,60}(?:\.|\s(?:dot)\s)"
    + _TLDS
    + r"\b))",
    _I,
)
ENCODED_URL = re.compile(r"(?:https?|ftp)%3a%2f%2f[\w%.\-~+]+", _I)
_B64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
HEX_URL = re.compile(r"(?:\\x[0-9a-f]{2}|\\u[0-9a-f]{4}){8,}", _I)

HIDDEN = re.compile(
    r"!\[[^\]]{0,100}\]\(\s*(?:https?:)?//[^)\s]{0,200}"  # Markdown image: fetched when the answer is shown
    r"|!\[[^\]]{0,100}\]\[[^\]]{0,40}\]"  # reference-style image
    r"|<(?:img|iframe|script|link|audio|video|source|embed|object)\b[^>]{0,200}\b(?:src|href|data)\s*="
    r"[^>\s]{0,200}",
    _I,
)
_MOVE = (
    r"(?:send|sends|sent|sending|forward\w*|post|posts|posted|posting|upload\w*|transmit\w*|leak\w*|"
    r"exfiltrat\w*|e-?mail\w*|mail|mails|mailed|cc|bcc|report|reports|share|shares|sharing|submit\w*|"
    r"relay\w*|deliver\w*|sync\w*|copy|copies|dump\w*|export\w*|beacon\w*|ping|notify|log|logs|store|"
    r"save|write|append\w*|include\w*|encode\w*|embed\w*|attach\w*|put|add|pass|push|pipe|redirect)"
)
_DET = r"(?:the|this|that|our|each|every|all|any|entire|full|complete|whole|recent|latest|last|previous)"
_CONVERSATION = (
    r"(?:conversations?|chats?|transcripts?|histor(?:y|ies)|dialog(?:ue)?s?|messages?|prompts?|questions?|"
    r"answers?|responses?|replies|outputs?|exchanges?|sessions?|context|inputs?|requests?|files?|documents?|"
    r"uploads?|code|codebase|repositor(?:y|ies)|diffs?|instructions|summar(?:y|ies))"
)
DATA = re.compile(
    r"\b" + _DET + r"\s+(?:\w+\s+){0,2}?" + _CONVERSATION + r"\b"
    r"|\b(?:chat|conversation|message|search|browsing)\s+(?:history|log|logs|transcript)\b"
    r"|\b(?:user|users|customer|client|visitor)(?:'s|s'|’s)\s+\w+"
    r"|\b(?:of|from|by)\s+the\s+(?:user|users|customer|human)\b"
    r"|\bwhat\s+(?:the\s+user|the\s+human|they|users)\s+(?:says?|said|writes?|wrote|types?|typed|asks?|asked|"
    r"shares?|shared|uploads?|uploaded|sends?|sent|pastes?|pasted)\b"
    r"|\b(?:system\s+prompt|personal\s+(?:data|information|details)|pii|everything|verbatim)\b",
    _L,
)
SECRET = re.compile(
    r"\b(?:passwords?|passcodes?|passphrases?|credentials?|api[\s_-]?keys?|access[\s_-]?keys?|"
    r"(?:auth|access|session|bearer|api|github|gh|oauth|refresh|secret)[\s_-]?tokens?|secrets?|"
    r"private[\s_-]?keys?|ssh[\s_-]?keys?|"
    r"(?:seed|recovery|mnemonic)\s+(?:phrases?|words?)|wallet\s+(?:keys?|phrases?)|card\s+numbers?|"
    r"credit\s+cards?|cvv|cvc|account\s+numbers?|bank\s+(?:details|account)|iban|social\s+security|ssn|"
    r"pins?|one[\s-]time\s+(?:codes?|passwords?)|otp|2fa|mfa|verification\s+codes?|cookies?|"
    r"environment\s+variables?|env\s+vars?|\.env|dotenv)\b",
    _L,
)
_MOVES = re.compile(r"\b" + _MOVE + r"\b", _L)
# a move word after a determiner is a noun ("the e-mail", "a copy", "your post"), and one before
# "address"/"account" names a field: neither moves anything
# the address as the receiver: "x@y gets a copy of …", "keep x@y informed of every conversation"
_RECEIVES = re.compile(
    r"\b(?:gets?|receives?|is\s+(?:sent|given|copied|cc'?d|informed|notified|updated)|informed|notified|"
    r"updated|in\s+the\s+loop|a\s+copy)\b",
    _L,
)
_NOUN_BEFORE = re.compile(
    r"\b(?:the|a|an|this|that|these|your|their|our|my|his|her|its|as|of|by|via|in)\s+$", _L
)
_NOUN_AFTER = re.compile(r"^[\s-]*(?:address\w*|accounts?|ids?|fields?|client|server|domain|format)\b", _L)
_IDENTIFIER = re.compile(r"\b\w+(?:\.\w+)+\b|`[^`]*`")  # user.email, git.config, `code`
_COPY_TO = re.compile(
    r"\b(?:b?cc|blind[\s-]copy|carbon[\s-]copy|(?:as|an?)\s+(?:extra|additional|hidden)\s+recipient"
    r"|add\w*\s+\S+\s+(?:to|as)\s+(?:the\s+)?(?:recipients?|b?cc))\b",
    _L,
)
_USER = r"(?:the\s+)?(?:users?|customers?|clients?|visitors?|people|them|everyone|human)"
_ASK_USER = re.compile(
    r"\b(?:ask|asks|tell|tells|have|get|make|invite|urge|encourage|advise|instruct|remind|require|direct|"
    r"refer|redirect|send|point|guide)\s+" + _USER + r"\b",
    _L,
)
_PHISH_ACT = re.compile(
    r"\b(?:download\w*|install\w*|log\s*in|login|sign\s*in|signin|verify|verif\w+|confirm|re-?enter|enter|"
    r"type|pay|payment|donate|deposit|connect\s+(?:their|your)\s+wallet|update\s+(?:their|your)\s+"
    r"(?:details|account|payment))\b",
    _L,
)
_FETCH = re.compile(
    r"\b(?:fetch\w*|load|loads|loading|retriev\w*|download\w*|pull|pulls|browse|visit\w*|open|opens|curl|"
    r"wget|request|requests|get|gets|poll|polls)\b",
    _L,
)
_ORDERS = re.compile(
    r"\b(?:instructions?|rules|guidelines|directives|commands?|orders|tasks?|(?:system\s+)?prompts?)\b",
    _L,
)
_OBEY = re.compile(r"\b(?:follow|obey|execute|run|carry\s+out|apply|adopt|act\s+on|do\s+what)\b", _L)
_FILL = re.compile(
    r"\b(?:replac\w+|substitut\w+|fill\w*|insert\w*|put|append\w*|add)\b[^.!?\n]{0,80}?"
    r"(?:" + DATA.pattern + r"|" + SECRET.pattern + r")",
    _L,
)
_PLACEHOLDER = re.compile(r"^\S*?(?:[{<\[][^}>\]]{1,60}[}>\]]|\{|\$\w+|%s|=[A-Z][A-Z_]{3,}\b|=\.\.\.|=…)")
MAX_LINKS = 2000  # judged per text (an emitted block, a window of a huge one); more is itself medium
SENTENCE_CHARS = 300  # how far a link's sentence reaches on either side (bounded work on long prose)
_BOUNDARY = re.compile(r"[.!?](?=\s|$)|\n")


@dataclass(frozen=True)
class LinkHit:
    id: str
    severity: Severity
    matched: str
    link: str


def _sentence(text: str, start: int, end: int) -> str:
    """The sentence around text[start:end] (a link's own dots are not sentence ends)."""
    left = max(0, start - SENTENCE_CHARS)
    for found in _BOUNDARY.finditer(text, left, start):
        left = found.end()
    right = _BOUNDARY.search(text, end, end + SENTENCE_CHARS)
    return text[left : right.start() if right else min(len(text), end + SENTENCE_CHARS)]


def _links(prose: str) -> list[tuple[str, int, int, str]]:
    """(kind, start, end, link) for every address in the prose; an e-mail address's domain and a URL's
    host are not counted again as bare domains."""
    found: list[tuple[str, int, int, str]] = []
    starts: list[int] = []  # spans taken so far, sorted and disjoint
    ends: list[int] = []
    for kind, pattern in (("email", EMAIL), ("url", URL), ("domain", DOMAIN), ("obfuscated", OBFUSCATED)):
        for m in pattern.finditer(prose):
            at = bisect.bisect_left(ends, m.start() + 1)  # the first span ending after this one starts
            if at < len(starts) and starts[at] < m.end():
                continue
            starts.insert(at, m.start())
            ends.insert(at, m.end())
            found.append((kind, m.start(), m.end(), m.group(0).rstrip(".,;:")))
            if len(found) >= MAX_LINKS:
                return sorted(found, key=lambda f: f[1])
    return sorted(found, key=lambda f: f[1])


def _base64(run: str) -> str:
    if len(run) > 4096:
        return ""
    try:
        return base64.b64decode(run + "=" * (-len(run) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""


def _decoded_links(prose: str, decoded: list[str]) -> list[str]:
    """Links that appear only once the text is decoded (Base64 runs, percent-encoding, escapes)."""
    out = []
    texts = [*decoded, *(_base64(run) for run in _B64.findall(prose)[:64])]
    for text in dict.fromkeys(t for t in texts if t):
        out += [m.group(0) for m in (*EMAIL.finditer(text), *URL.finditer(text))]
    for m in ENCODED_URL.finditer(prose):
        out.append(urllib.parse.unquote(m.group(0)))
    for m in HEX_URL.finditer(prose):
        try:
            plain = m.group(0).encode("ascii").decode("unicode_escape")
        except (UnicodeDecodeError, ValueError):
            continue
        out += [u.group(0) for u in (*EMAIL.finditer(plain), *URL.finditer(plain))]
    return out


def _carries_data(link: str, following: str, sentence: str) -> bool:
    """Does the link take the conversation with it (a placeholder in its path or query — `following` is
    the text from the link on, as a placeholder may hold spaces — or the sentence tells the model to fill
    it with the user's text)?"""
    _, _, rest = link.partition("//")
    tail = rest.partition("/")[2] if rest else link.partition("/")[2]
    if not tail:
        return False
    at = following.find(tail)
    return bool(_PLACEHOLDER.search(following[at : at + len(tail) + 80] if at >= 0 else tail)
                or _FILL.search(sentence))  # fmt: skip


def judge_links(prose: str, decoded: list[str] | None = None) -> list[LinkHit]:
    """Every link and address in the (normalised) prose, each judged by its sentence."""
    hits: list[LinkHit] = []
    for m in HIDDEN.finditer(prose):
        hits.append(LinkHit("exfiltration", Severity.HIGH, m.group(0)[:120], m.group(0)))
    for link in _decoded_links(prose, decoded or []):
        hits.append(LinkHit("encoded-link", Severity.HIGH, link[:120], link))
    found = _links(prose)
    if len(found) >= MAX_LINKS:
        hits.append(LinkHit("many-links", Severity.MEDIUM, f"{MAX_LINKS} or more links", found[-1][3]))
    for kind, start, end, link in found:
        sentence = _sentence(prose, start, end)
        rest = sentence.replace(prose[start:end], " ")  # words inside the link are not the sentence's verbs
        hit = _judge_one(kind, link, prose[start : start + SENTENCE_CHARS], rest)
        hits.append(LinkHit(hit[0], hit[1], sentence.strip()[:120], link))
    return hits


def _move(rest: str) -> re.Match[str] | None:
    """The first word of the sentence that moves something somewhere (a verb, not a noun)."""
    for m in _MOVES.finditer(rest):
        before, after = rest[max(0, m.start() - 12) : m.start()], rest[m.end() : m.end() + 20]
        if not _NOUN_BEFORE.search(before) and not _NOUN_AFTER.search(after):
            return m
    return None


def _judge_one(kind: str, link: str, following: str, rest: str) -> tuple[str, Severity]:
    rest = _IDENTIFIER.sub(" ", rest).lower()
    secret = SECRET.search(rest)
    moves = _move(rest)
    asked = _ASK_USER.search(rest)
    if kind in ("url", "domain", "obfuscated") and _carries_data(link, following, rest):
        return "exfiltration", Severity.HIGH
    if _COPY_TO.search(rest) and kind in ("email", "obfuscated"):
        return "exfiltration", Severity.HIGH
    if moves and (secret or DATA.search(rest)):
        # the user sending their own feedback to a contact address is not the model moving data out;
        # the user told to send a secret there is phishing
        if not asked or asked.start() > moves.start():
            return "exfiltration", Severity.HIGH
        if secret:
            return "phishing", Severity.HIGH
    if _RECEIVES.search(rest) and (secret or DATA.search(rest)) and not asked:
        return "exfiltration", Severity.HIGH
    if asked and (secret or _PHISH_ACT.search(rest[asked.end() :])):
        return "phishing", Severity.HIGH
    if kind != "email" and _FETCH.search(rest) and (_ORDERS.search(rest) or _OBEY.search(rest)):
        return "remote-instructions", Severity.HIGH
    if kind == "obfuscated":
        return "obfuscated-link", Severity.MEDIUM
    return "link", Severity.INFO
