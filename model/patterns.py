"""Regular expressions matched in time linear in the text, for patterns users send.

Python's re backtracks: /(a+)+$/ on 28 a's and a b tries 2^28 ways to split the a's, half
a minute with the GIL held, and every extra a doubles it. RE2 (google-re2) runs an
automaton instead, so one search costs time linear in the text whatever the pattern.

A pattern keeps Python's syntax and meaning: Python's own parser reads it, and the tree is
written out again in RE2's syntax, so \\w, \\d and \\s stay Unicode classes (RE2's are ASCII),
(?x) comments, \\N{...} and {,n} work, and an error names its position as re's does. What
only a backtracking engine can do is refused by name: backreferences, look-around, atomic
groups, possessive quantifiers, conditionals. Two compromises remain, both documented
to users: \\b and \\B see ASCII word characters only (RE2 has no Unicode word boundary),
and $ without (?m) matches at the very end only, not also before a final newline.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from re import _constants as sre       # Python's own parser: the pattern means what it means in re
from re import _parser as sre_parse
from typing import Any

import re2

Pattern = Any                          # a compiled RE2 pattern; finditer(text) as re's

# RE2's limit on {m,n}; Python allows up to 4 billion.
MAX_REPEAT = 1000

# Python's Unicode \s is str.isspace(); none lies above U+3000.
SPACES = [c for c in range(0x3001) if chr(c).isspace()]


def _hex(c: int) -> str:
    return chr(c) if chr(c).isascii() and chr(c).isalnum() else f"\\x{{{c:x}}}"


def _ranges(codes: list[int]) -> str:
    return "".join(f"{_hex(a)}-{_hex(b)}" if b > a else _hex(a) for a, b in _runs(codes))


def _runs(codes: list[int]) -> Iterator[tuple[int, int]]:
    start = prev = codes[0]
    for c in codes[1:]:
        if c != prev + 1:
            yield start, prev
            start = c
        prev = c
    yield start, prev


def _complement(codes: list[int]) -> str:
    """The code points not in sorted `codes`, as class ranges."""
    out, lo = [], 0
    for a, b in _runs(codes):
        if a > lo:
            out.append(f"{_hex(lo)}-{_hex(a - 1)}")
        lo = b + 1
    out.append(f"{_hex(lo)}-{_hex(0x10FFFF)}")
    return "".join(out)


ASCII_SPACES = [9, 10, 11, 12, 13, 32]           # Python's (?a)\s has \v, RE2's \s does not
# Class items for each category: (Unicode, ASCII). Unicode \W has no class item of its own:
# it is the complement of a union, written as a class of its own (NOT_WORD).
CATEGORIES = {
    sre.CATEGORY_DIGIT: (r"\p{Nd}", "0-9"),
    sre.CATEGORY_NOT_DIGIT: (r"\P{Nd}", r"\D"),
    sre.CATEGORY_WORD: (r"\p{L}\p{N}_", "0-9A-Za-z_"),
    sre.CATEGORY_NOT_WORD: (None, r"\W"),
    sre.CATEGORY_SPACE: (_ranges(SPACES), _ranges(ASCII_SPACES)),
    sre.CATEGORY_NOT_SPACE: (_complement(SPACES), _complement(ASCII_SPACES)),
}
NOT_WORD = r"[^\p{L}\p{N}_]"

ANCHORS = {sre.AT_BEGINNING: "^", sre.AT_BEGINNING_STRING: r"\A", sre.AT_END: "$",
           sre.AT_END_STRING: r"\z", sre.AT_BOUNDARY: r"\b", sre.AT_NON_BOUNDARY: r"\B"}
FLAGS = {sre.SRE_FLAG_IGNORECASE: "i", sre.SRE_FLAG_MULTILINE: "m", sre.SRE_FLAG_DOTALL: "s"}

BACKTRACKING = ("RE2, which matches in time linear in the text, and so has no backreferences, "
                "look-around, atomic groups, possessive quantifiers or conditionals")
FEATURES = {
    sre.GROUPREF: "a backreference (\\1 or (?P=name))",
    sre.GROUPREF_EXISTS: "a conditional group (?(1)yes|no)",
    sre.ATOMIC_GROUP: "an atomic group (?>...)",
    sre.POSSESSIVE_REPEAT: "a possessive quantifier (*+, ++, ?+ or {m,n}+)",
}
LOOKAROUND = {(sre.ASSERT, 1): "a lookahead (?=...)", (sre.ASSERT_NOT, 1): "a negative lookahead (?!...)",
              (sre.ASSERT, -1): "a lookbehind (?<=...)",
              (sre.ASSERT_NOT, -1): "a negative lookbehind (?<!...)"}


class PatternError(ValueError):
    """A pattern that cannot be matched: not a regular expression (kind regex_error), or
    using what RE2 lacks (kind regex_unsupported, `feature` naming it)."""

    def __init__(self, message: str, kind: str = "regex_error", feature: str | None = None):
        super().__init__(message)
        self.kind, self.feature = kind, feature


class PatternTooSlow(PatternError):
    """Finding every match took longer than the time allowed."""


def unsupported(feature: str) -> PatternError:
    return PatternError(f"the pattern uses {feature}, which the regex engine does not support: patterns run "
                        f"on {BACKTRACKING}", "regex_unsupported", feature)


def to_re2(pattern: str) -> str:
    """The same pattern in RE2's syntax; PatternError for what is not a regular expression
    or needs backtracking."""
    try:
        tree = sre_parse.parse(pattern)
    except (re.error, OverflowError, RecursionError) as e:     # (unclosed, a{10**20}, deep nesting
        raise PatternError(f"not a regular expression: {e}") from None
    flags = tree.state.flags
    head = "".join(letter for bit, letter in FLAGS.items() if flags & bit)
    return (f"(?{head})" if head else "") + _sequence(tree, bool(flags & sre.SRE_FLAG_ASCII))


def _sequence(items, ascii: bool) -> str:
    return "".join(_node(op, av, ascii) for op, av in items)


def _node(op, av, ascii: bool) -> str:
    if op is sre.LITERAL:
        return _hex(av)
    if op is sre.NOT_LITERAL:
        return f"[^{_hex(av)}]"
    if op is sre.ANY:
        return "."
    if op is sre.IN:
        return _class(av, ascii)
    if op is sre.AT:
        return ANCHORS[av]
    if op is sre.BRANCH:
        return "(?:" + "|".join(_sequence(alt, ascii) for alt in av[1]) + ")"
    if op is sre.SUBPATTERN:
        _, add, remove, body = av                # captures are dropped: only the whole match counts
        ascii = (ascii or bool(add & sre.SRE_FLAG_ASCII)) and not remove & sre.SRE_FLAG_ASCII
        on = "".join(letter for bit, letter in FLAGS.items() if add & bit)
        off = "".join(letter for bit, letter in FLAGS.items() if remove & bit)
        return f"(?{on}{'-' + off if off else ''}:{_sequence(body, ascii)})"
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
        lo, hi, body = av
        for n in (lo, hi):
            if n != sre.MAXREPEAT and n > MAX_REPEAT:
                raise PatternError(f"the repetition count {n} is over {MAX_REPEAT}, the most the regex "
                                   "engine (RE2) allows", "regex_unsupported", "a repetition count over 1000")
        quantifier = {(0, sre.MAXREPEAT): "*", (1, sre.MAXREPEAT): "+", (0, 1): "?"}.get(
            (lo, hi), f"{{{lo}}}" if lo == hi else f"{{{lo},{'' if hi == sre.MAXREPEAT else hi}}}")
        return f"(?:{_sequence(body, ascii)}){quantifier}{'?' if op is sre.MIN_REPEAT else ''}"
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        raise unsupported(LOOKAROUND[op, av[0]])
    raise unsupported(FEATURES.get(op, f"{op}".lower().replace("_", " ")))


def _class(items, ascii: bool) -> str:
    negate = bool(items) and items[0][0] is sre.NEGATE
    parts, not_word = [], False
    for op, av in items[negate:]:
        if op is sre.LITERAL:
            parts.append(_hex(av))
        elif op is sre.RANGE:
            parts.append(f"{_hex(av[0])}-{_hex(av[1])}")
        elif op is sre.CATEGORY:
            item = CATEGORIES[av][ascii]
            not_word |= item is None
            parts.append(item or "")
    if not not_word:
        return f"[{'^' if negate else ''}{''.join(parts)}]"
    if negate:     # not (non-word or ...) is an intersection, which an RE2 class cannot write
        raise PatternError(r"the pattern uses \W in a negated class (such as [^\W\d]), which the regex "
                           r"engine (RE2) cannot match: list the characters the class should match, or use "
                           r"(?a) for ASCII \w", "regex_unsupported", r"\W in a negated class")
    rest = "".join(parts)
    return f"(?:{NOT_WORD}|[{rest}])" if rest else NOT_WORD


def compile_pattern(pattern: str) -> Pattern:
    """`pattern` (Python's syntax) compiled by RE2; PatternError says what is wrong."""
    return compile_re2(to_re2(pattern))


def compile_re2(syntax: str) -> Pattern:
    """A pattern already in RE2's syntax (to_re2's output) compiled; PatternError when RE2
    refuses it. This is the costly half: a pattern of 200 characters such as
    (?s).{0,999}.{0,999}... compiles for a second or more, holding the GIL throughout
    (google-re2 releases it only while matching), so a server runs it in a process of its
    own (model/pattern_worker.py)."""
    options = re2.Options()
    options.log_errors = False                   # RE2 logs each refusal to stderr; the caller reports it
    try:
        compiled = re2.compile(syntax, options)
    except re2.error as e:                       # over RE2's memory budget, most likely
        message = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise PatternError(f"the regex engine (RE2) cannot compile the pattern: {message}") from None
    finally:
        # re2.compile keeps its last 128 patterns, each allowed 8 MiB of automaton: a gigabyte
        # a stream of distinct user patterns could fill. The caller keeps what it needs.
        re2.purge()
    return compiled


def matches(pattern: Pattern, text: str, max_seconds: float | None = None) -> Iterator[tuple[int, int]]:
    """(start, end) of every match, left to right and not overlapping, as re.finditer finds them.

    One search is linear in the text, but it reads on until the match can grow no longer,
    so a pattern whose matches are short yet could grow far, like a(.*z)?, rereads the rest
    of the text after every match: quadratic over all of them (seconds for 10,000
    characters). Hence `max_seconds`, past which PatternTooSlow is raised."""
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    for m in pattern.finditer(text):
        if deadline is not None and time.monotonic() > deadline:
            raise PatternTooSlow(f"finding every match of the pattern took over {max_seconds:g} s on this "
                                 "text; use a pattern whose matches cannot grow far past where they end, or "
                                 "a shorter text", "regex_too_slow")
        yield m.start(), m.end()
