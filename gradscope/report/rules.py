"""The rule language of ``gradscope check``: a small hand-written scanner and parser
(no eval). Grammar (whitespace allowed between tokens)::

    rule        := metric_rule | verdict_rule
    metric_rule := FAMILY "." NAME [selector] ["." AGGREGATION] OP NUMBER
    verdict_rule:= "verdict" "." (FAMILY | "*") OP LEVEL
    selector    := "[" item ("," item)* "]"
    item        := [SCOPE "="] PATTERN          PATTERN: text up to "," or "]", or "quoted"
    AGGREGATION := last | first | min | max | mean | median | p95 | any | all | count
    OP          := "<" | "<=" | ">" | ">=" | "==" | "!="
    NUMBER      := 4096 | 1e-3 | -0.5 | inf | -inf
    LEVEL       := ok | warn | alert                (ordered ok < warn < alert)

Examples: ``noise.b_simple.last < 4096``, ``stability.update_ratio[layer=fc1].max < 1e-2``,
``conflict.cos[seg|depth].min > -0.5``, ``conflict.cos[task_pair=*].median > -0.5``,
``verdict.stability != alert``, ``verdict.* <= warn``. Semantics live in check.py.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace

from gradscope.analysis.types import FAMILIES, LEVELS
from gradscope.errors import GradscopeError

AGGREGATIONS = ("last", "first", "min", "max", "mean", "median", "p95", "any", "all", "count")
OPERATORS = ("<=", ">=", "==", "!=", "<", ">")  # two-character operators first
SCOPES = ("model", "layer", "task_pair", "task", "group", "group_pair", "sample", "epoch", "param_group")
MAX_RULE_LENGTH = 1000
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[-+]?(?:inf\b|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)")


def unknown(what: str, word: str, choices: tuple[str, ...]) -> str:
    """"unknown family 'nosie' (did you mean noise? one of ...)": difflib's nearest choice."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    guess = f"did you mean {close[0]}? " if close else ""
    return f"unknown {what} {word!r} ({guess}one of {', '.join(choices)})"


@dataclass(frozen=True)
class Selector:
    """Keys a rule looks at: ``scope`` None matches any scope but model."""

    scope: str | None
    pattern: str  # fnmatch-style glob over the metric's key


@dataclass(frozen=True)
class Rule:
    text: str
    family: str  # a metric family, or "verdict"
    name: str  # metric name; for verdict rules the family judged, or "*"
    selectors: tuple[Selector, ...] = ()
    aggregation: str = "last"
    op: str = "<"
    threshold: float = 0.0  # for verdict rules the level's index in LEVELS
    why: str = ""
    optional: bool = False

    @property
    def is_verdict(self) -> bool:
        return self.family == "verdict"

    @property
    def threshold_text(self) -> str:
        return LEVELS[int(self.threshold)] if self.is_verdict else f"{self.threshold:g}"


class _Scanner:
    """A cursor over the rule text; every failure names the rule and the 1-based column."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, message: str) -> GradscopeError:
        return GradscopeError(f"rule {self.text!r}: {message} at position {self.pos + 1}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip_space()
        return self.text.startswith(token, self.pos)

    def expect(self, token: str, what: str) -> None:
        if not self.peek(token):
            raise self.fail(f"expected {what}")
        self.pos += len(token)

    def match(self, pattern: re.Pattern[str], what: str) -> str:
        self.skip_space()
        found = pattern.match(self.text, self.pos)
        if found is None:
            raise self.fail(f"expected {what}")
        self.pos = found.end()
        return found.group()

    def operator(self) -> str:
        for op in OPERATORS:
            if self.peek(op):
                self.pos += len(op)
                return op
        raise self.fail(f"expected a comparison ({' '.join(sorted(OPERATORS))})")

    def end(self) -> None:
        self.skip_space()
        if self.pos != len(self.text):
            raise self.fail("unexpected text after the rule")


def _pattern(scanner: _Scanner) -> str:
    """A quoted string (with \\" and \\\\ escapes) or raw text up to ',' or ']'."""
    scanner.skip_space()
    text, start = scanner.text, scanner.pos
    if scanner.peek('"'):
        scanner.pos += 1
        chars = []
        while scanner.pos < len(text) and text[scanner.pos] != '"':
            if text[scanner.pos] == "\\" and scanner.pos + 1 < len(text):
                scanner.pos += 1
            chars.append(text[scanner.pos])
            scanner.pos += 1
        if scanner.pos >= len(text):
            scanner.pos = start
            raise scanner.fail("unterminated quoted key")
        scanner.pos += 1
        return "".join(chars)
    while scanner.pos < len(text) and text[scanner.pos] not in ",]":
        scanner.pos += 1
    value = text[start : scanner.pos].strip()
    if not value:
        raise scanner.fail("expected a key (a layer, a task pair like a|b, or * for all)")
    return value


def _selector(scanner: _Scanner) -> tuple[Selector, ...]:
    scanner.expect("[", "'['")
    items = []
    while True:
        scanner.skip_space()
        start = scanner.pos
        scope_match = _IDENT.match(scanner.text, scanner.pos)
        scope = None
        if scope_match and scanner.text[scope_match.end() :].lstrip().startswith("="):
            scope = scope_match.group()
            if scope not in SCOPES:
                raise scanner.fail(unknown("scope", scope, SCOPES))
            scanner.pos = scope_match.end()
            scanner.expect("=", "'='")
        else:
            scanner.pos = start
        items.append(Selector(scope, _pattern(scanner)))
        if scanner.peek("]"):
            scanner.pos += 1
            return tuple(items)
        scanner.expect(",", "',' or ']'")


def _verdict_rule(scanner: _Scanner, text: str) -> Rule:
    scanner.expect(".", "'.' after verdict")
    if scanner.peek("*"):
        scanner.pos += 1
        family = "*"
    else:
        family = scanner.match(_IDENT, "a family or *")
        if family not in FAMILIES:
            scanner.pos -= len(family)
            raise scanner.fail(unknown("family", family, (*FAMILIES, "*")))
    op = scanner.operator()
    level = scanner.match(_IDENT, f"a level ({', '.join(LEVELS)})")
    if level not in LEVELS:
        scanner.pos -= len(level)
        raise scanner.fail(unknown("level", level, LEVELS))
    scanner.end()
    return Rule(text, "verdict", family, op=op, threshold=float(LEVELS.index(level)))


def parse_rule(text: str, *, why: str = "", optional: bool = False) -> Rule:
    """Parse one rule; GradscopeError naming the rule and the position when it is malformed."""
    if not isinstance(text, str):
        raise GradscopeError(f"rule {text!r}: a rule is a string")
    if len(text) > MAX_RULE_LENGTH:
        raise GradscopeError(f"rule {text[:40]!r}...: longer than {MAX_RULE_LENGTH} characters")
    scanner = _Scanner(text)
    family = scanner.match(_IDENT, "a metric family (" + ", ".join(FAMILIES) + ") or verdict")
    if family == "verdict":
        return replace(_verdict_rule(scanner, text), why=why, optional=optional)
    if family not in FAMILIES:
        scanner.pos -= len(family)
        raise scanner.fail(unknown("family", family, (*FAMILIES, "verdict")))
    scanner.expect(".", "'.' and a metric name")
    name = scanner.match(_IDENT, "a metric name")
    selectors = _selector(scanner) if scanner.peek("[") else ()
    aggregation = "last"
    if scanner.peek("."):
        scanner.pos += 1
        aggregation = scanner.match(_IDENT, "an aggregation")
        if aggregation not in AGGREGATIONS:
            scanner.pos -= len(aggregation)
            raise scanner.fail(unknown("aggregation", aggregation, AGGREGATIONS))
    op = scanner.operator()
    number = scanner.match(_NUMBER, "a number")
    scanner.end()
    return Rule(text, family, name, selectors, aggregation, op, float(number), why, optional)
