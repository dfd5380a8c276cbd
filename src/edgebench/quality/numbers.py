"""Reading the final numeric answer out of free text, with units ("$0.05", "5 cents", "50 mph").

Which number is "the answer": the first one after the last "answer"/"result" marker (or inside the
last `\\boxed{}`), else the last one in the text. When the expected unit is known, numbers carrying
a unit of that dimension win over bare ones, so "5 minutes for 100 machines" reads 5 minutes.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

__all__ = [
    "UNITS",
    "Quantity",
    "answer_quantities",
    "convert",
    "find_quantities",
    "is_conversion",
    "pick_answer",
]

# alias → (dimension, factor to the dimension's base unit)
UNITS: dict[str, tuple[str, float]] = {}


def _add(dimension: str, factor: float, *aliases: str) -> None:
    for alias in aliases:
        UNITS[alias] = (dimension, factor)


_add("money", 1.0, "$", "dollar", "dollars", "usd", "bucks")
_add("money", 0.01, "cent", "cents", "¢")
_add("speed", 1.0, "mph", "miles per hour", "miles an hour", "mi/h", "miles/hour")
_add("speed", 0.621371192, "km/h", "kmh", "kph", "kilometers per hour", "kilometres per hour")
_add("speed", 2.236936292, "m/s", "meters per second", "metres per second")
_add("time", 1.0, "s", "sec", "secs", "second", "seconds")
_add("time", 60.0, "min", "mins", "minute", "minutes")
_add("time", 3600.0, "h", "hr", "hrs", "hour", "hours")
_add("time", 86400.0, "day", "days")
_add("distance", 1.0, "m", "meter", "meters", "metre", "metres")
_add("distance", 1000.0, "km", "kilometer", "kilometers", "kilometre", "kilometres")
_add("distance", 0.01, "cm", "centimeter", "centimeters", "centimetre", "centimetres")
_add("distance", 1609.344, "mi", "mile", "miles")
_add("distance", 0.3048, "ft", "foot", "feet")
_add("mass", 1.0, "kg", "kilogram", "kilograms")
_add("mass", 0.001, "g", "gram", "grams")
_add("area", 1.0, "m²", "m^2", "m2", "sq m", "square meters", "square metres")
_add("area", 0.0001, "cm²", "cm^2", "cm2", "square centimeters", "square centimetres")
_add("percent", 1.0, "%", "percent", "per cent")
_add("temperature_c", 1.0, "°c", "degrees celsius", "degrees c", "celsius")

_CURRENCY = {"$": "$", "€": "$", "£": "$"}  # symbol before the number; all read as "money"
_UNIT_AFTER = re.compile(
    r"[ \t]*(" + "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True)) + r")(?![a-z])",
    re.I,
)
_NUMBER = re.compile(
    r"(?<![\w.])(?P<cur>[$€£][ \t]?)?(?P<sign>[-−])?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:/(?P<den>\d+)(?![\d/]))?"
)
_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_ONES += [
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_WORD = re.compile(
    r"\b(?:(?P<tens>" + "|".join(_TENS) + r")(?:[- ](?P<unit>" + "|".join(_ONES[1:10]) + r"))?"
    r"|(?P<ones>" + "|".join(_ONES) + r"))\b",
    re.I,
)
# "one" is often not a number ("no one", "each one", "one of them"): skip it in those spots.
_ONE_BEFORE = re.compile(r"\b(?:no|each|any|every|some|this|that|which|the|someone|anyone)\s+$", re.I)
_ONE_AFTER = re.compile(r"^\s*(?:of|another|other|by|more|'s|’s)\b", re.I)
_MARKER = re.compile(
    r"\b(?:final\s+answer|answer|result)\b[*_\s]*(?:is\b|would\s+be\b|will\s+be\b|[:=])[*_\s]*", re.I
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


class Quantity(BaseModel):
    model_config = ConfigDict(frozen=True)

    value: float
    unit: str | None  # the alias as written, lowercased
    start: int
    end: int

    @property
    def dimension(self) -> str | None:
        return UNITS[self.unit][0] if self.unit else None


def convert(q: Quantity, unit: str | None) -> float:
    """`q` expressed in `unit` when both are of one dimension; the bare value otherwise."""
    if unit is None or q.unit is None:
        return q.value
    dim, factor = UNITS[q.unit]
    target_dim, target_factor = UNITS[unit.lower()]
    return q.value * factor / target_factor if dim == target_dim else q.value


def _unit_after(text: str, pos: int) -> tuple[str | None, int]:
    m = _UNIT_AFTER.match(text, pos)
    return (m.group(1).lower(), m.end()) if m else (None, pos)


def find_quantities(text: str) -> list[Quantity]:
    """Every number in `text` (digits, and number words up to ninety-nine), in order of position."""
    found: list[Quantity] = []
    for m in _NUMBER.finditer(text):
        value = float(m.group("num").replace(",", ""))
        if m.group("den"):
            den = float(m.group("den"))
            if den == 0:
                continue
            value /= den
        if m.group("sign"):
            value = -value
        unit, end = _unit_after(text, m.end())
        if m.group("cur") and unit is None:
            unit = _CURRENCY[m.group("cur").strip()]
        found.append(Quantity(value=value, unit=unit, start=m.start(), end=end))
    for m in _WORD.finditer(text):
        if m.group("ones"):
            word = m.group("ones").lower()
            if word == "one" and (_ONE_BEFORE.search(text[: m.start()]) or _ONE_AFTER.match(text[m.end() :])):
                continue
            value = float(_ONES.index(word))
        else:
            value = 20.0 + 10 * _TENS.index(m.group("tens").lower())
            if m.group("unit"):
                value += _ONES.index(m.group("unit").lower())
        unit, end = _unit_after(text, m.end())
        found.append(Quantity(value=value, unit=unit, start=m.start(), end=end))
    return sorted(found, key=lambda q: q.start)


def _prefer_unit(quantities: list[Quantity], unit: str | None) -> list[Quantity]:
    if unit is None:
        return quantities
    dim = UNITS[unit.lower()][0]
    same = [q for q in quantities if q.dimension == dim]
    return same or quantities


def pick_answer(text: str, unit: str | None = None) -> Quantity | None:
    """The quantity that is the final answer, or None when the text holds no number."""
    everything = find_quantities(text)

    def within(start: int, end: int) -> list[Quantity]:
        return _prefer_unit([q for q in everything if start <= q.start < end], unit)

    boxed = list(_BOXED.finditer(text))
    if boxed and (inside := within(boxed[-1].start(1), boxed[-1].end(1))):
        return inside[-1]
    markers = list(_MARKER.finditer(text))
    if markers:
        start = markers[-1].end()
        newline = text.find("\n", start)
        end = len(text) if newline < 0 or not text[start:newline].strip() else newline
        if after := within(start, end):
            return after[0]
    preferred = _prefer_unit(everything, unit)
    return preferred[-1] if preferred else None


_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|jun(?:e)?|jul(?:y)?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_LABEL_BEFORE = re.compile(r"(?:\bversion|\bv|\brelease|\bstep)\s*$", re.I)
_MONTH_BEFORE = re.compile(r"\b" + _MONTH + r"\.?\s*$", re.I)
_MONTH_AFTER = re.compile(r"^(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r"\b", re.I)


def is_conversion(q: Quantity, unit: str | None) -> bool:
    """`q` is written in another unit than `unit` (of the same dimension): a rounded conversion."""
    if unit is None or q.unit is None or q.dimension != UNITS[unit.lower()][0]:
        return False
    return UNITS[q.unit][1] != UNITS[unit.lower()][1]


def answer_quantities(text: str, unit: str | None) -> list[tuple[Quantity, bool]]:
    """Numbers that could be an answer in `unit`, each with whether it is a (rounded) conversion.

    Day-of-month numbers next to a month and version labels ("version 0.01") are not quantities.
    With a unit, numbers of its dimension win over bare ones.
    """
    found = [
        q
        for q in find_quantities(text)
        if not _LABEL_BEFORE.search(text[max(0, q.start - 12) : q.start])
        and not (q.value <= 31 and _MONTH_AFTER.match(text[q.end : q.end + 16]))
        and not (q.value <= 31 and _MONTH_BEFORE.search(text[max(0, q.start - 12) : q.start]))
    ]
    if unit is not None:
        found = _prefer_unit(found, unit)
    return [(q, is_conversion(q, unit)) for q in found]
