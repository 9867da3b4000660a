"""Make a schema's `pattern` portable: one regex that every validator a tool schema meets accepts.

JSON Schema's `pattern` is an ECMA-262 regular expression, and 2020-12 asks for the `u` flag. A
tool schema is compiled by Python's `re` (python-jsonschema's meta-schema check; the MCP Python SDK
client runs it on every output schema), by jsonschema-rs (our argument checks), by JavaScript
engines with the `u` flag (Ajv's default, so TypeScript clients) and by the `regex` module. Real
specs are written for other dialects too (Java, .NET, PCRE, Python). `portable_pattern` rewrites
a pattern into the part of the syntax all of them read alike, keeping its meaning:

* escapes that only some dialects know become plain forms: `\\A` -> `^`, `\\z`/`\\Z` -> `$`,
  octal `\\0dd` -> `\\xHH`, `\\cX` -> `\\xHH`, `\\u{...}` -> the character, `\\_` or `\\@` (identity
  escapes, invalid with ECMA's `u` flag) -> the character; what is portable keeps its spelling;
* a `{` or `}` or `]` that is not syntax (`{Name}`) is escaped; a `-` next to a class escape
  (`[\\w-.]`) is a literal hyphen, as browsers read it (ECMA-262 Annex B);
* named groups `(?<n>...)`/`(?P<n>...)` become plain groups (Python and ECMA spell them differently);
* Unicode property escapes `\\p{L}`, `\\P{C}`, Java's `\\p{Alpha}`... (Python's `re` has none) are
  approximated: their ASCII members exactly, and all of U+0080..U+10FFFF where the property has
  non-ASCII members. The result accepts everything the original accepts (a looser check, never a
  stricter one: the upstream still validates), so `[\\p{L}\\p{N}_.:/=+\\-@]*` still refuses `<`.

Anything else that cannot be read alike everywhere (inline flags `(?i)`, possessive `a*+`, class
intersection `&&`, `{1-70}`, lone surrogates, repetitions too large for jsonschema-rs) is refused
with a reason; the caller leaves such a pattern out of the tool schema and reports it.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from typing import Any, Final

import jsonschema_rs
import regex

from converter.spec.pattern_properties import property_facts, runs

__all__ = ["portable_pattern"]

_QUANTIFIER: Final = re.compile(r"\{(\d+)(,(\d*))?\}")
_PROPERTY_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_ =-]*")
_SYNTAX: Final = frozenset("^$\\.*+?()[]{}|")
_CLASS_ESCAPES: Final = frozenset("dDwWsS")
_CONTROL: Final = {"f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}
class _UnportableError(Exception):
    """The pattern uses something that cannot be written the same way for every dialect."""


# A character class being built: ("range", low, high, source spelling or None) and ("set", "\\w")
# items; _NON_ASCII ("everything from U+0080 up") stands for the non-ASCII part of a property.
_Item = tuple[Any, ...]
_NON_ASCII: Final[_Item] = ("range", 0x80, 0x10FFFF, None)


def portable_pattern(pattern: str) -> tuple[str | None, str | None]:
    """Return `(portable pattern, None)`, or `(None, why it cannot be used)`."""
    return _portable(pattern)


@lru_cache(maxsize=8192)
def _portable(pattern: str) -> tuple[str | None, str | None]:
    try:
        out = _Translator(pattern).run()
    except _UnportableError as exc:
        return None, str(exc)
    why = _compile_everywhere(out)
    return (out, None) if why is None else (None, why)


def _compile_everywhere(pattern: str) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "possible nested set" and friends: read differently later
            re.compile(pattern)
        regex.compile(pattern)
    except (re.error, regex.error, FutureWarning, DeprecationWarning, ValueError, OverflowError, RecursionError) as exc:
        return f"is not a valid regular expression ({exc})"
    try:
        jsonschema_rs.Draft202012Validator({"pattern": pattern})
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        return f"cannot be compiled by jsonschema-rs ({str(exc).splitlines()[0][:80]})"
    return None


class _Translator:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.out: list[str] = []
        self._groups: list[tuple[bool, int]] = []  # open groups: (is a lookaround, where it starts in out)
        self._assertion: tuple[int, int] | None = None  # the lookaround that just closed: (start, end) in out

    def run(self) -> str:
        p = self.p
        while self.i < len(p):
            c = p[self.i]
            if c == "\\":
                self._escape()
            elif c == "[":
                self._class()
            elif c == "(":
                self._group()
            elif c == "{":
                self._brace()
            elif c == ")":
                start = self._groups.pop() if self._groups else (False, len(self.out))
                self.out.append(c)
                self.i += 1
                self._assertion = (start[1], len(self.out)) if start[0] else None
            elif c in "}]":
                self.out.append("\\" + c)  # a literal: ECMA's `u` flag wants it escaped
                self.i += 1
            elif c in "*+?":
                self.i += 1
                self._quantified(c, 0 if c in "*?" else 1)
            else:
                self.out.append(c)
                self.i += 1
        return "".join(self.out)

    # -- outside classes -------------------------------------------------------------------

    def _escape(self) -> None:
        p, i = self.p, self.i
        if i + 1 >= len(p):
            raise _UnportableError("is not a valid regular expression (it ends with a lone backslash)")
        c = p[i + 1]
        self.i = i + 2
        if c in "dDwWsSbB":
            self.out.append("\\" + c)
        elif c in "AzZ":  # Java/Python/PCRE anchors; `$` without the m flag is the end in ECMA
            self.out.append("^" if c == "A" else "$")
        elif c.isdigit() and c != "0":
            digits = re.match(r"\d+", p[i + 1:])
            assert digits is not None
            self.i = i + 1 + len(digits.group())
            self.out.append("\\" + digits.group())  # a backreference
        elif c in "pP":
            self.out.append(self._render([*self._property(c == "P", in_negated_class=False)], negated=False))
        elif c == "k":
            raise _UnportableError("uses a named backreference")
        else:
            char = self._escaped_char(c)
            source = p[i:self.i]
            self.out.append(
                source if _is_portable_escape(source, in_class=False) else _render_char(char, in_class=False)
            )

    def _group(self) -> None:
        p, i = self.p, self.i
        for plain in ("(?:", "(?=", "(?!", "(?<=", "(?<!"):
            if p.startswith(plain, i):
                self._groups.append((plain != "(?:", len(self.out)))
                self.out.append(plain)
                self.i = i + len(plain)
                return
        named = re.match(r"\(\?P?<[A-Za-z_][A-Za-z0-9_]*>", p[i:])
        if named:  # Python spells named groups (?P<n>), ECMA (?<n>): a plain group matches the same
            self._groups.append((False, len(self.out)))
            self.out.append("(")
            self.i = i + len(named.group())
            return
        if p.startswith("(?", i):
            raise _UnportableError(f"uses the group syntax {p[i:i + 4]!r}, which ECMA-262 does not have")
        self._groups.append((False, len(self.out)))
        self.out.append("(")
        self.i = i + 1

    def _brace(self) -> None:
        match = _QUANTIFIER.match(self.p, self.i)
        if match:
            low, high = match.group(1), match.group(3)
            if high and int(high) < int(low):
                raise _UnportableError(f"has the repetition {match.group()!r} with its bounds reversed")
            self.i = match.end()
            self._quantified(match.group(), int(low))
            return
        following = self.p[self.i + 1:self.i + 2]
        if following.isdigit() or following == ",":
            raise _UnportableError(f"has {self.p[self.i:self.i + 8]!r}, which is not a valid repetition")
        self.out.append("\\{")
        self.i += 1

    def _quantified(self, quantifier: str, low: int) -> None:
        """Append a quantifier (and its lazy `?`); on a lookaround, what the repetition means instead.

        An assertion matches no characters, so repeated at least once it is the assertion itself, and
        repeated from zero times it always matches: nothing. Python and ECMA-262 Annex B read `(?!\\.)+`
        so (AWS EFS's paths); ECMA's `u` flag and jsonschema-rs refuse a quantified assertion.
        """
        assertion, self._assertion = self._assertion, None
        before = len(self.out)
        self.out.append(quantifier)
        self._after_quantifier()
        if assertion is not None and assertion[1] == before:
            del self.out[assertion[0] if low == 0 else before:]

    def _after_quantifier(self) -> None:
        nxt = self.p[self.i:self.i + 1]
        if nxt == "?":
            self.out.append("?")
            self.i += 1
        elif nxt == "+":
            raise _UnportableError("uses a possessive quantifier, which ECMA-262 does not have")

    # -- character classes ------------------------------------------------------------------

    def _class(self) -> None:
        p = self.p
        self.i += 1
        negated = p.startswith("^", self.i)
        if negated:
            self.i += 1
        if p.startswith("]", self.i):
            raise _UnportableError("starts a character class with ']', which dialects read differently")
        items: list[_Item] = []
        while True:
            if self.i >= len(p):
                raise _UnportableError("is not a valid regular expression (unterminated character class)")
            c = p[self.i]
            if c == "]":
                self.i += 1
                break
            if c == "&" and p.startswith("&&", self.i):
                raise _UnportableError(
                    "uses class intersection '&&', which ECMA-262 (without the v flag) does not have"
                )
            atom = self._class_atom(negated)
            if len(atom) == 1 and p.startswith("-", self.i) and not p.startswith("-]", self.i):
                self.i += 1  # a range a-b
                high = self._class_atom(negated)
                low_item, high_item = atom[0], high[0]
                if len(high) == 1 and low_item[0] == high_item[0] == "range" and low_item[1] == low_item[2] \
                        and high_item[1] == high_item[2]:
                    if int(high_item[1]) < int(low_item[1]):
                        raise _UnportableError("has a character range whose ends are reversed")
                    spelled = low_item[3] is not None and high_item[3] is not None
                    spelling = f"{low_item[3]}-{high_item[3]}" if spelled else None
                    items.append(("range", int(low_item[1]), int(high_item[1]), spelling))
                    continue
                items.extend([*atom, ("range", 0x2D, 0x2D, None), *high])  # Annex B: `[\w-.]` has a literal '-'
                continue
            items.extend(atom)
        self.out.append(self._render(items, negated))

    def _class_atom(self, negated: bool) -> list[_Item]:
        """One class member: a character, a class escape, or the items of a property escape."""
        p = self.p
        c = p[self.i]
        if c != "\\":
            self.i += 1
            return [("range", ord(c), ord(c), c if c != "[" else None)]
        if self.i + 1 >= len(p):
            raise _UnportableError("is not a valid regular expression (it ends with a lone backslash)")
        e = p[self.i + 1]
        self.i += 2
        if e in _CLASS_ESCAPES:
            return [("set", "\\" + e)]
        if e in "pP":
            return self._property(e == "P", in_negated_class=negated)
        if e == "b":
            return [("range", 8, 8, None)]
        if e.isdigit() and e != "0":
            raise _UnportableError("uses a backreference or octal escape inside a character class")
        start = self.i - 2
        cp = ord(self._escaped_char(e))
        source = p[start:self.i]
        return [("range", cp, cp, source if _is_portable_escape(source, in_class=True) else None)]

    def _escaped_char(self, c: str) -> str:
        """The character an escape `\\c...` (already consumed up to `c`) stands for."""
        p = self.p
        if c in _CONTROL:
            return chr(_CONTROL[c])
        if c == "0":
            octal = re.match(r"[0-7]{1,2}", p[self.i:])
            if octal:  # Annex B octal escape
                self.i += len(octal.group())
                return chr(int(octal.group(), 8))
            return "\x00"
        if c == "x":
            hex_digits = re.match(r"[0-9A-Fa-f]{2}|\{([0-9A-Fa-f]{1,6})\}", p[self.i:])  # \x{HH}: Java, PCRE
            if not hex_digits:
                raise _UnportableError("has '\\x' without two hex digits")
            self.i += len(hex_digits.group())
            cp = int(hex_digits.group(1) or hex_digits.group(), 16)
            if 0xD800 <= cp <= 0xDFFF or cp > 0x10FFFF:
                raise _UnportableError("matches lone surrogates, which most validators cannot represent")
            return chr(cp)
        if c == "u":
            return self._unicode_escape()
        if c == "c":
            letter = p[self.i:self.i + 1]
            if not (letter.isascii() and letter.isalpha()):
                raise _UnportableError("has '\\c' without a control letter")
            self.i += 1
            return chr(ord(letter) % 32)
        if c.isascii() and c.isalnum():
            raise _UnportableError(f"uses the escape '\\{c}', which ECMA-262 does not have")
        return c  # an identity escape: `\.` `\-` `\_` `\@` `\/` ...

    def _unicode_escape(self) -> str:
        p = self.p
        braced = re.match(r"\{([0-9A-Fa-f]{1,6})\}", p[self.i:])
        if braced:
            self.i += len(braced.group())
            cp = int(braced.group(1), 16)
        else:
            hex4 = re.match(r"[0-9A-Fa-f]{4}", p[self.i:])
            if not hex4:
                raise _UnportableError("has '\\u' without four hex digits")
            self.i += 4
            cp = int(hex4.group(), 16)
            low = re.match(r"\\u(d[c-f][0-9a-f]{2})", p[self.i:], re.IGNORECASE)
            if 0xD800 <= cp <= 0xDBFF and low:  # a surrogate pair written as two escapes
                self.i += 6
                cp = 0x10000 + ((cp - 0xD800) << 10) + (int(low.group(1), 16) - 0xDC00)
        if 0xD800 <= cp <= 0xDFFF or cp > 0x10FFFF:
            raise _UnportableError("matches lone surrogates, which most validators cannot represent")
        return chr(cp)

    # -- Unicode properties -----------------------------------------------------------------

    def _property(self, negated: bool, *, in_negated_class: bool) -> list[_Item]:
        """Class items approximating `\\p{name}` (or `\\P{name}` when `negated`) from outside.

        In a negated class the members are approximated from inside instead (ASCII part only), so
        that the class as a whole still accepts at least what the original accepts.
        """
        match = re.match(r"\{([^{}]*)\}", self.p[self.i:])
        if not match or not _PROPERTY_NAME.fullmatch(match.group(1)):
            raise _UnportableError("has a malformed Unicode property escape")
        self.i += len(match.group())
        facts = property_facts(match.group(1))
        if facts is None:
            raise _UnportableError(f"uses the Unicode property {match.group(1)!r}, which is not known")
        ascii_members, has_non_ascii, misses_non_ascii = facts
        if negated:
            ascii_members = frozenset(range(128)) - ascii_members
            has_non_ascii = misses_non_ascii
        items: list[_Item] = [("range", a, b, None) for a, b in runs(ascii_members)]
        if has_non_ascii and not in_negated_class:
            items.append(_NON_ASCII)
        return items

    def _render(self, items: list[_Item], negated: bool) -> str:
        """A class of `items` in source order, spelled as in the source where that is portable;
        duplicates and what U+0080.. covers are left out."""
        if not items:
            raise _UnportableError("has a character class that matches nothing")
        has_non_ascii = _NON_ASCII in items
        kept: list[_Item] = []
        seen: set[tuple[Any, ...]] = set()
        for item in items:
            key = tuple(item[:3])
            if key in seen or (has_non_ascii and item[0] == "range" and int(item[1]) >= 0x80 and item != _NON_ASCII):
                continue
            seen.add(key)
            kept.append(item)
        trimmed = len(kept) != len(items)
        body: list[str] = []
        previous = ""
        for n, item in enumerate(kept):
            if item[0] == "set":
                text = str(item[1])
            else:
                low, high, spelling = int(item[1]), int(item[2]), item[3]
                raw_ok = spelling is not None and not (
                    (spelling == "-" and trimmed)
                    or (spelling == "^" and (trimmed or n == 0))  # would mean something else
                    or (spelling in ("&", "~") and previous == spelling)
                )
                if raw_ok:
                    text = str(spelling)
                else:
                    text = _render_char(chr(low), in_class=True, previous=previous)
                    if high != low:
                        text += "-" + _render_char(chr(high), in_class=True)
            body.append(text)
            previous = text[-1:]
        return "[" + ("^" if negated else "") + "".join(body) + "]"


def _is_portable_escape(source: str, *, in_class: bool) -> bool:
    """An escape every dialect reads as the same one character: `\\.` `\\/` `\\x41` `\\u00e9` `\\t`..."""
    if len(source) == 2:
        c = source[1]
        return c in _SYNTAX or c == "/" or c in "tnrfv" or (in_class and c == "-")
    if re.fullmatch(r"\\x[0-9A-Fa-f]{2}", source):
        return True
    return bool(re.fullmatch(r"\\u[0-9A-Fa-f]{4}", source)) and not 0xD800 <= int(source[2:], 16) <= 0xDFFF


def _render_char(c: str, *, in_class: bool, previous: str = "") -> str:
    """One literal character, written so that every dialect reads it as itself."""
    cp = ord(c)
    if cp == 0x10FFFF:
        return c
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    if 0x80 <= cp <= 0xA0 or cp in (0x2028, 0x2029, 0xFEFF):
        return f"\\u{cp:04x}"
    if in_class:
        if c in "\\[]^-":  # `[` too: Python warns of a nested set, Rust reads one
            return "\\" + c
    elif c in _SYNTAX:
        return "\\" + c
    if in_class and c in "&~" and previous == c:  # Python and Rust read `&&` `~~` in a class as set operations
        return f"\\x{cp:02x}"
    return c
