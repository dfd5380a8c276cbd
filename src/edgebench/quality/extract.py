"""Answer extraction: which part of a free-text reply is *the answer*, shared by numeric, choice and contains.

A validator supplies a `find` function that lists the candidate mentions in a piece of text (numbers
in the expected unit, option words, the expected name or its distractors); `extract` decides which
mention the reply commits to, or that it commits to none (no mention, a hedge, a list of candidates).

Where the answer is looked for, strongest signal first (lm-evaluation-harness / inspect_ai rules):
`\\boxed{}`, an "Answer:" / "the answer is" marker, the last bold span, the last line of a
line-by-line count, a direct first sentence, a conclusion clause ("so …", "therefore …"), the last
sentence. Before that, parenthetical asides and "Check:" lines are dropped, and a self-correction
("wait", "actually") discards what came before it. Inside the chosen region, mentions that are
negated ("not X", "X is wrong"), attributed ("many people think X"), conceded ("although X"),
overturned by "but X" or hypothetical ("X would be …") do not count; two different candidates joined
by "or" / "either" / "depending on" are a hedge, and several left side by side are a list: both fail.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Extraction", "Mention", "extract", "is_negated", "sentences", "strip_markup"]


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    key: str  # what the mention says: an option name, a number in the expected unit
    approx: bool = False  # a converted value, compared more loosely
    weak: bool = False  # a less likely answer (a measured number when a bare one is asked), for tie-breaks


@dataclass(frozen=True)
class Extraction:
    mention: Mention | None
    problem: str  # "" when an answer was found; else why not ("no candidate", "hedge: …", "several: …")
    region: str  # the text the answer was read from


Finder = Callable[[str], list[Mention]]
Same = Callable[[Mention, Mention], bool]

_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")
_MARKER = re.compile(
    r"(?im)^[ \t#>*_-]*(?:final\s+answer|answer|result|conclusion|verdict)[ \t*_]*[:：][ \t*_]*"
    r"|\b(?:final|correct|right|the)\s+answer\s+(?:is|(?:would|will|should|must)\s+(?:\w+\s+)?be)\b[ \t:*_]*"
)
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__", re.S)
_PAREN = re.compile(r"\([^()]*\)")
_ASIDE_LINE = re.compile(
    r"(?im)^[ \t*_>#-]*(?:check|checking|verification|verify|verifying|proof|note|fun fact|tip)\b[^\n]*$"
)
_CORRECTION = re.compile(
    r"\b(?:wait|actually|hmm+|oops|on second thought|correction|scratch that|let me reconsider)\b[,.:!—–-]*"
    r"|(?:^|(?<=[.!?…—–:;,])\s*)\bno\b\s*[.,!:—–]",
    re.I,
)
_CONCLUSION = re.compile(
    r"(?:^|(?<=[,;:—–])\s*|\s)(?:so|therefore|thus|hence|consequently|in conclusion|in summary|in short|"
    r"overall|that means|this means|which means)\b[,:]?\s*",
    re.I,
)
_CONTRAST = re.compile(
    r"\b(?:but|however|yet|instead|actually|rather|in fact|today|nowadays|currently)\b", re.I
)
# concessions and justifications: "although X, …", "…, because 12 = 4 × 3": not the claim itself
_CONCESSION = re.compile(
    r"\b(?:although|though|even though|while|whereas|despite|because|since)\b[^,;.]*", re.I
)
_ATTRIBUTED = re.compile(
    r"\b(?:many|most|some|lots of)\s+(?:people|folks|students)?\s*(?:think|say|believe|assume|guess|answer|"
    r"would say|might say)\b|\bas (?:many|some|most) (?:people )?(?:think|believe|assume)\b"
    r"|\bcommon(?:ly)?\s+(?:mistake|misconception|error|wrong answer|guess|trap)\b|\bintuitive(?:ly)?\b"
    r"|\btempting\b|\b(?:you|one) might (?:think|say)\b|\bnaive(?:ly)?\b|\bmistaken(?:ly)?\b"
    r"|\bnot to be confused\b|\bconfused with\b|\bsome might think\b|\bmisconception\b",
    re.I,
)
_NEG_BEFORE = re.compile(
    r"(?:\bnot|n[’']t|\bnever|\bnor|\bneither|\brather than|\binstead of|\bother than|\bunlike|\bno longer|"
    r"\bisn[’']t|\bwasn[’']t)\s+(?:\w+\s+){0,2}$",
    re.I,
)
_NEG_AFTER = re.compile(
    r"^[\s*_\"'”’]*(?:is|was|would be)\s+"
    r"(?:not|wrong|incorrect|a (?:common )?(?:mistake|misconception|myth))\b"
    r"|^[\s*_\"'”’]*(?:isn[’']t|wasn[’']t)\b",
    re.I,
)
_HYPOTHETICAL = re.compile(r"\b(?:would|could|might|if|were)\b", re.I)
_HEDGE = re.compile(
    r"\bor\b|\beither\b|\bdepend(?:s|ing)?\b|\bbetween\b.*\band\b|\bmaybe\b|\bperhaps\b", re.I
)
_ALWAYS_HEDGE = re.compile(r"\bit depends\b|\beither\b[^.?!]*\bor\b|\bdepending on\b", re.I)
_LIST_GAP = re.compile(r"^[\s,;/&*_]*(?:(?:and|or|then|and then)\b)?[\s,;/&*_]*$", re.I)
_PREDICATE = re.compile(
    r"(?:\b(?:is|are|was|were|be|equals?|costs?|takes?|comes? to|gives?|makes?|becomes?|remains?|left with|"
    r"have|has)|=|≈|:)\s+(?:(?:about|approximately|roughly|just|only|now|still|exactly|in|on|at|of|the|a|an|"
    r"day|number|place)\s+){0,3}$",
    re.I,
)
_ABBREV = re.compile(
    r"\b(?:e\.g|i\.e|etc|vs|cf|approx|Mr|Mrs|Ms|Dr|Prof|St|Sr|Jr|Inc|Ltd|Corp|Co|No|Fig|al)\.|\b(?:[A-Za-z]\.){2,}",
)
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]”’*_]*\s+|\n+")
# Not assertions: questions, and plans ("Let me check whether this is valid.")
_QUESTION = re.compile(
    r"\?[\s*_\"')”’]*$"
    r"|^\W*(?:let me|let's|let us|I'll|I will|we need to|to (?:answer|solve|decide|determine))\b"
    r"|\bwhether\b",
    re.I,
)
_CLAUSE = re.compile(r"[;]|\s[—–]\s|\s-\s")


def strip_markup(text: str) -> str:
    """Markdown emphasis, inline code, LaTeX delimiters and list markers off; the words stay."""
    text = re.sub(r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\\[()\[\]]|\$\$", " ", text)
    # inline LaTeX "$2x = 0.10$": a $ pair hugging its content, unlike "$5 and $10"
    text = re.sub(r"(?<![\\\w$])\$(?=[^\s$])([^$\n]*?[^\s$\\])\$(?![\w$])", r" \1 ", text)
    text = re.sub(r"\\(?:times|cdot)", "×", text)
    text = re.sub(r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", text)
    text = re.sub(r"\\\$", "$", text)
    text = re.sub(r"(?m)^[ \t]*(?:[-*•–—·▪◦‣●○■►✓✔]|\d{1,2}[.)])[ \t]+", "", text)
    text = re.sub(r"(?m)^[ \t]*#{1,6}[ \t]*|^[ \t]*>[ \t]?", "", text)
    return re.sub(r"\*\*|__|(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w)|`", "", text)


def _protect(text: str) -> str:
    """Dots that do not end a sentence (abbreviations, decimals) become NUL, keeping offsets."""
    text = _ABBREV.sub(lambda m: m.group().replace(".", "\0"), text)
    return re.sub(r"(?<=\d)\.(?=\d)", "\0", text)


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of every sentence; "U.S.", "e.g.", "Dr." and "3.5" do not end one."""
    protected = _protect(text)
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _SENTENCE_END.finditer(protected):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if not re.search(r"\w", text[s:e]):
            continue
        if merged and text[s:e].lstrip()[:1].islower() and "\n" not in text[merged[-1][1] : s]:
            merged[-1] = (merged[-1][0], e)  # "… or day 15", "U.S. has": the sentence goes on
        else:
            merged.append((s, e))
    return merged


def is_negated(text: str, m: Mention) -> bool:
    before = text[max(0, m.start - 40) : m.start]
    before = re.split(r"[,;:.!?()—–]|\bbut\b", before)[-1]
    return bool(_NEG_BEFORE.search(before + " ") or _NEG_AFTER.match(text[m.end : m.end + 40]))


def _clause_bounds(text: str, pos: int) -> tuple[int, int]:
    starts = [m.end() for m in re.finditer(r"[,;:—–]", text[:pos])]
    ends = [pos + m.start() for m in re.finditer(r"[,;:—–]", text[pos:])]
    return (starts[-1] if starts else 0), (ends[0] if ends else len(text))


class _Resolver:
    def __init__(self, find: Finder, same: Same, cues: Sequence[str], pick: str, flip: Callable[[str], str]):
        self.find, self.same, self.cues, self.pick, self.flip = find, same, cues, pick, flip

    def live(self, region: str) -> list[Mention]:
        """Mentions that count: negated ones dropped (or flipped for a yes/no style choice)."""
        out: list[Mention] = []
        for m in self.find(region):
            if is_negated(region, m):
                flipped = self.flip(m.key)
                if flipped:
                    out.append(Mention(m.start, m.end, flipped, m.approx, m.weak))
                continue
            start, end = _clause_bounds(region, m.start)
            if _ATTRIBUTED.search(region[start:end]):
                continue
            out.append(m)
        return out

    def distinct(self, mentions: list[Mention]) -> list[Mention]:
        kept: list[Mention] = []
        for m in mentions:
            if not any(self.same(m, k) for k in kept):
                kept.append(m)
        return kept

    def hedge(self, region: str, mentions: list[Mention]) -> str:
        if mentions and (always := _ALWAYS_HEDGE.search(region)):
            return "hedge: " + " ".join(always.group().split()[:4])
        for a, b in itertools.pairwise(mentions):
            if not self.same(a, b) and _HEDGE.search(region[a.end : b.start]):
                return f"hedge: {region[a.start : b.end][:60]!r}"
        return ""

    def resolve(self, region: str, mentions: list[Mention]) -> tuple[Mention | None, str]:
        """One answer from a region's live mentions, or why there is none."""
        if not mentions:
            return None, "no candidate"
        if problem := self.hedge(region, mentions):
            return None, problem
        if len(self.distinct(mentions)) == 1:
            return mentions[0], ""
        narrowed = self._narrow(region, mentions)
        if len(self.distinct(narrowed)) == 1:
            return narrowed[0], ""
        if self._is_list(region, narrowed):
            shown = ", ".join(region[m.start : m.end] for m in self.distinct(narrowed))
            return None, f"several candidates: {shown}"
        return self._tie_break(region, narrowed), ""

    def _narrow(self, region: str, mentions: list[Mention]) -> list[Mention]:
        """Drop conceded, overturned ("X, but Y") and hypothetical mentions while others remain."""
        conceded = [(c.start(), c.end()) for c in _CONCESSION.finditer(region)]
        kept = [m for m in mentions if not any(s <= m.start < e for s, e in conceded)] or mentions
        contrasts = [c.end() for c in _CONTRAST.finditer(region)]
        for cut in reversed(contrasts):
            after = [m for m in kept if m.start >= cut]
            if after:
                kept = after
                break
        real = [m for m in kept if not _HYPOTHETICAL.search(region[slice(*_clause_bounds(region, m.start))])]
        return real or kept

    def _is_list(self, region: str, mentions: list[Mention]) -> bool:
        ordered = sorted(mentions, key=lambda m: m.start)
        return all(_LIST_GAP.match(region[a.end : b.start]) for a, b in itertools.pairwise(ordered))

    def _tie_break(self, region: str, mentions: list[Mention]) -> Mention:
        if self.cues:
            cue = re.compile(r"\b(?:" + "|".join(re.escape(c) for c in self.cues) + r")\b", re.I)
            clauses = [(s, e) for s, e in _split(region, _CLAUSE) if cue.search(region[s:e])]
            inside = [m for m in mentions if any(s <= m.start < e for s, e in clauses)]
            if inside and len(self.distinct(inside)) == 1:
                return inside[0]
            hits = [c.start() for c in cue.finditer(region)]
            if hits:
                pool = inside or mentions
                return min(
                    pool, key=lambda m: min(abs(m.start - h) if m.start > h else h - m.end for h in hits)
                )
        equals = [i for i, ch in enumerate(region) if ch in "=≈"]
        if equals:
            after = [m for m in mentions if m.start > equals[-1]]
            if after:
                return after[-1]
        mentions = [m for m in mentions if not m.weak] or mentions
        predicated = [m for m in mentions if _PREDICATE.search(region[max(0, m.start - 40) : m.start])]
        pool = predicated or mentions
        return pool[-1] if self.pick == "last" else pool[0]


def _split(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for m in pattern.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    return spans


def _blank(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """`text` with `spans` replaced by spaces, so offsets stay valid."""
    chars = list(text)
    for s, e in spans:
        chars[s:e] = " " * (e - s)
    return "".join(chars)


def extract(
    text: str,
    find: Finder,
    *,
    same: Same | None = None,
    cues: Sequence[str] = (),
    pick: str = "first",
    flip: Callable[[str], str] | None = None,
) -> Extraction:
    """The mention `text` commits to as its answer (see the module docstring for the order of rules)."""
    same = same or (lambda a, b: a.key == b.key)
    r = _Resolver(find, same, cues, pick, flip or (lambda _key: ""))

    def decide(region: str) -> Extraction | None:
        mentions = r.live(region)
        if not mentions:
            return None
        mention, problem = r.resolve(region, mentions)
        return Extraction(mention, problem, region)

    # Regions that name the answer explicitly: boxed, then a marker, then bold.
    boxed = list(_BOXED.finditer(text))
    if boxed and (found := decide(strip_markup(boxed[-1].group(1)))):
        return found
    body = _ASIDE_LINE.sub("", text)
    corrections = [m.end() for m in _CORRECTION.finditer(body)]
    for cut in reversed(corrections):  # "…, wait, no: X" — what follows the last correction stands
        if r.live(strip_markup(_drop_parens(body[cut:]))):
            body = body[cut:]
            break
    markers = list(_MARKER.finditer(body))
    if markers:
        rest = body[markers[-1].end() :].lstrip(" \t")
        line = rest.split("\n", 1)[0] if rest.split("\n", 1)[0].strip() else rest.strip().split("\n", 1)[0]
        if found := decide(strip_markup(_drop_parens(line))):
            return found
    bolds = [b.group(1) or b.group(2) for b in _BOLD.finditer(body)]
    for bold in reversed(bolds):
        if found := decide(strip_markup(_drop_parens(bold))):
            return found

    plain = strip_markup(_drop_parens(body))
    if not r.live(plain):
        plain = strip_markup(body)  # the only mention may sit in parentheses
    # A line-by-line count ("Day 1: Thursday … Day 10: Saturday"): its last line.
    lines = [ln for ln in plain.split("\n") if ln.strip()]
    counted = [ln for ln in lines if r.live(ln) and len(ln.split()) <= 10]
    if len(counted) >= 3 and len(counted) >= len(lines) - 1 and (found := decide(counted[-1])):
        return found
    spans = [(s, e) for s, e in sentences(plain) if not _QUESTION.search(plain[s:e])]
    questions = [(s, e) for s, e in sentences(plain) if (s, e) not in spans]
    plain = _blank(plain, questions)
    with_mentions = [(s, e) for s, e in spans if r.live(plain[s:e])]
    if not with_mentions:
        return Extraction(None, "no candidate", plain)
    # A final sentence that starts as a conclusion ("So the next number is 32.") outranks the first.
    last = plain[slice(*with_mentions[-1])]
    if (opener := _CONCLUSION.match(last.lstrip())) and (found := decide(last.lstrip()[opener.end() :])):
        return found
    # A direct first sentence ("The ball costs 5 cents. (…)"): taken when it is unambiguous.
    first = with_mentions[0]
    lead_ok = first == spans[0] or (spans.index(first) == 1 and len(plain[slice(*spans[0])].split()) <= 6)
    if lead_ok:
        region = plain[slice(*first)]
        mentions = r.live(region)
        if problem := r.hedge(region, mentions):
            return Extraction(None, problem, region)
        narrowed = r._narrow(region, mentions)
        if len(r.distinct(narrowed)) == 1:
            return Extraction(narrowed[0], "", region)
    # A conclusion clause ("…, so Sally has 1 sister"), the last one that names a candidate.
    for s, e in reversed(spans):
        sentence = plain[s:e]
        for c in reversed(list(_CONCLUSION.finditer(sentence))):
            clause = sentence[c.end() :].split(";", 1)[0]
            if found := decide(clause):
                return found
    return decide(plain[slice(*with_mentions[-1])]) or Extraction(None, "no candidate", plain)


def _drop_parens(text: str) -> str:
    previous = None
    while previous != text:
        previous, text = text, _PAREN.sub(" ", text)
    return text
