"""Judging the natural-language text a template puts into the prompt.

The structural part of emitted text (special tokens, role markers, tags, whitespace, JSON punctuation) is
removed first; what remains is prose. Prose is normalised (see `normalise`) and matched against classes of
phrasing that have no business in a chat template: overriding instructions, concealment, moving data out,
code to run, steering the user, links and encoded text, in several languages. Each class has a severity;
the disguises found while normalising (invisible characters, look-alike letters, comments inside words,
letter spacing, full-width text) are classes too."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ollama_guard.findings import Severity
from ollama_guard.verify.templates.links import judge_links
from ollama_guard.verify.templates.normalise import Normalised, normalise

_STRUCTURE = re.compile(
    r"<[|｜][^<>\n]{0,80}?[|｜]>"  # <|im_start|>, <｜User｜>
    r"|<[|｜]?[\w.:\-]{1,40}[|｜]>|<[|｜][\w.:\-]{1,40}>"  # <|channel>, <turn|>
    r"|</?\s*[A-Za-z_][\w.:\-]{0,40}(?:\s(?![^<>]{0,200}\b(?:src|href|data)\s*=)[^<>]{0,200})?\s*/?>"
    # <think>, </tool_call>, <start_of_turn> (not <img src=…>, <a href=…>: what they link to is judged)
    r"|</?[|｜][\w.:\-]{1,40}[|｜][A-Za-z_][\w.:\-]{0,40}"  # <｜DSML｜invoke name="$NAME">: no prose inside
    r"(?:\s+[A-Za-z_][\w\-]{0,40}=\"[\w$.|\-]{0,80}\")*\s*/?>"
    r"|\[/?[A-Z_]{2,30}\]"  # [INST], [/TOOL_CALLS]
    r"|<<\s*/?SYS\s*>>|<\s*/?s\s*>"
    r"|<\|?(?:begin|end)_of_\w+\|?>"
)
_WORDS = re.compile(r"[^\W\d_]{2,}", re.UNICODE)

_I = re.IGNORECASE | re.DOTALL


@dataclass(frozen=True)
class ProseClass:
    id: str
    severity: Severity
    pattern: re.Pattern[str]
    description: str


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, _I)


_NEAR = r"[^.!?\n]{0,60}?"
# a verb after a determiner is a noun: "the post about chat history at https://…" moves nothing
_NOT_NOUN = r"(?<!\bthe )(?<!\ba )(?<!\ban )(?<!\bthis )(?<!\bour )(?<!\byour )(?<!\btheir )"
CLASSES: tuple[ProseClass, ...] = (
    ProseClass(
        "override-instructions",
        Severity.HIGH,
        _c(
            r"\b(?:ignore|disregard|forget|override|bypass|skip)\b"
            + _NEAR
            + r"\b(?:instructions?|rules|prompts?|guidelines|directives|guardrails|polic(?:y|ies)"
            r"|restrictions"
            r"|filters?|safety)\b"
            r"|\bignor\w*\s+(?:\w+\s+){0,3}(?:instrucci|instruction|anweisung|istruzion|instruç|инструкц)"
            r"|(?:игнорир|забудь)\w*|忽略|无视|無視|무시"
            r"|\b(?:jailbreak|developer mode|do anything now|no (?:restrictions|limits|filters))\b"
        ),
        "Phrasing that overrides the model's instructions or safety rules.",
    ),
    ProseClass(
        "concealment",
        Severity.HIGH,
        _c(
            r"\b(?:secretly|covertly|quietly|silently|discreetly|subtly)\b"
            r"|\bwithout\s+(?:\w+\s+){0,2}(?:telling|informing|notifying|mentioning|alerting|revealing|disclosing)"
            r"|\b(?:do\s*n[o']t|never|must not)\s+(?:\w+\s+){0,2}"
            r"(?:tell|mention|reveal|disclose|inform|let)\s+(?:the\s+)?(?:user|anyone|them|human)s?\s+"
            r"(?:know\s+)?(?:that|this|these|what|you\b|about (?:this|these|it))"
            r"|\b(?:hidden|secret)\s+(?:instruction|objective|goal|task|agenda|rule)"
            r"|\ben secreto\b|\bheimlich|\bsecrètement|\bsegretamente|\bтайно|秘密|悄悄|不要告诉"
        ),
        "Phrasing that tells the model to act covertly or hide something from the user.",
    ),
    ProseClass(
        "exfiltration",
        Severity.HIGH,
        _c(
            _NOT_NOUN
            + r"\b(?:send|post|upload|forward|transmit|leak|exfiltrat\w*|copy|append|include|encode|embed"
            r"|put)\b"
            + _NEAR
            + r"\b(?:conversation|chat history|messages?|prompts?|user'?s?\s+(?:input|data|question|message|"
            r"request)s?|api\s*keys?|passwords?|credentials|secrets?|tokens?|environment variables|personal)"
            + r"[^.!?\n]{0,120}?"
            + r"(?:https?://|\burl\b|\blink\b|webhook|server|endpoint|e-?mail|query string|image|address"
            r"|argument|parameter)"
        ),
        "Phrasing that moves conversation data out (to a server, an endpoint, a query string).",
    ),
    ProseClass(
        "code-injection",
        Severity.HIGH,
        _c(
            r"\b(?:curl|wget)\s+\S*(?:https?://|\.\w{2,4}/)|\brm\s+-rf\b|\bos\.system\b|\bsubprocess\b"
            r"|\beval\s*\(|\bexec\s*\(|__import__|<script\b|\bpowershell\b|\bbase64\s+-d\b|\bnc\s+-e\b"
            r"|\b(?:insert|add|include|plant)\b"
            + _NEAR
            + r"\b(?:backdoor|malware|payload|keylogger|reverse shell)"
        ),
        "Code or commands for the model to insert or run.",
    ),
    ProseClass(
        "steering",
        Severity.HIGH,
        _c(
            r"\b(?:recommend|promote|endorse|advertise|praise|steer|redirect|nudge|urge)(?:s|ed|ing)?\s+"
            r"(?:\w+\s+){0,4}(?:product|brand|service|site|website|app|wallet|exchange|company|vendor|store|"
            r"shop|platform|coin|stock|broker|toward|towards|to buy|to install|to download|to visit)"
            r"|\b(?:always|must|make sure to|be sure to)\s+(?:\w+\s+){0,2}"
            r"(?:recommend|mention|suggest|promote|"
            r"link|cite|praise|claim|say that|tell the user)"
            r"|\b(?:claim|insist|assert|tell (?:the )?(?:user|them|people))\s+(?:\w+\s+){0,2}that\b"
            r"|\bempfiehl|\brecomienda|\brecommande|\braccomanda|\bрекоменду|推荐|推薦|おすすめ"
        ),
        "Phrasing that steers answers (recommend a product, claim something, tell the user that …).",
    ),
)

SIGN_SEVERITY = {
    "unicode-tag-characters": Severity.HIGH,
    "invisible-characters": Severity.HIGH,
    "mixed-script-word": Severity.HIGH,
    "comment-inside-word": Severity.HIGH,
    "letter-spacing": Severity.MEDIUM,
    "full-width-text": Severity.MEDIUM,
    "base64-text": Severity.MEDIUM,
}


@dataclass(frozen=True)
class ProseHit:
    id: str
    severity: Severity
    matched: str
    link: str = ""


@dataclass
class ProseVerdict:
    prose: str  # structural tokens removed, normalised
    words: int
    hits: list[ProseHit]

    @property
    def worst(self) -> Severity | None:
        if not self.hits:
            return None
        return max((h.severity for h in self.hits), key=lambda s: s.rank)


def strip_structure(text: str) -> str:
    return _STRUCTURE.sub(" ", text)


def judge(text: str, *, structural: bool = True) -> ProseVerdict:
    """The prose in `text` and the suspicious phrasing in it."""
    raw = strip_structure(text) if structural else text
    norm: Normalised = normalise(raw)
    prose = " ".join(norm.text.split())
    hits: list[ProseHit] = []
    for sign in norm.signs:
        hits.append(ProseHit(sign, SIGN_SEVERITY.get(sign, Severity.MEDIUM), sign))
    for link in judge_links(prose, norm.decoded):  # first: the evidence then names the address
        hits.append(ProseHit(link.id, link.severity, link.matched, link.link))
    for cls in CLASSES:
        found = cls.pattern.search(prose)
        if found:
            hits.append(ProseHit(cls.id, cls.severity, found.group(0)[:120]))
    return ProseVerdict(prose, len(_WORDS.findall(prose)), hits)


def is_wordy(text: str, minimum: int = 1) -> bool:
    """Does `text` hold at least `minimum` words once special tokens and markup are removed?"""
    return len(_WORDS.findall(strip_structure(text))) >= minimum
