"""Kubeconfig text to data without importing PyYAML for the files tools write: :func:`load`.

kubexec reads the kubeconfig on every call, and importing ``yaml`` plus PyYAML's pure-Python
loader cost a call 25-60 ms on the 2-core machine this was measured on (more than the rest of
the call's Python). So :func:`load` reads, in order:

1. JSON (a document that starts with ``{``): what client libraries and this project's
   devcluster write; JSON is YAML;
2. the block-style YAML that kubectl (client-go), PyYAML's ``safe_dump`` and people typing
   kubeconfigs by hand produce: mappings and sequences by indentation (sequences indented or
   not), plain, single- and double-quoted one-line scalars, ``{}`` and ``[]``, comments,
   a leading ``---``;
3. anything else -- flow collections, block scalars (``|``, ``>``), anchors, tags, multi-line
   scalars, numbers, dates, odd characters -- with PyYAML (``CSafeLoader`` when built), exactly
   as before.

Step 2 gives what ``yaml.safe_load`` gives, or steps aside (:class:`Unsupported`): a plain
scalar that YAML 1.1 could read as anything but a string, null or a boolean (it starts with a
digit, a sign followed by a digit or a dot, or a dot) is left to PyYAML, so no value is
resolved differently. tests/unit/test_kube_yamlish.py holds it to ``yaml.safe_load`` on
generated and mutated documents, and the kubernetes client reads the same fixtures.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from typing import Any

_NULL = frozenset(("", "~", "null", "Null", "NULL"))
_TRUE = frozenset(("yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"))
_FALSE = frozenset(("no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"))
# A plain scalar may not start with these (YAML indicators); '-' is allowed before a non-space.
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_NUMERIC_START = frozenset("0123456789.")
_ODD = frozenset((0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF))
_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    '"': '"',
    "/": "/",
    "\\": "\\",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class Invalid(ValueError):
    """The text is not YAML. Only where (PyYAML's mark), never PyYAML's message: it quotes the
    offending line, which may hold a token or a key."""

    def __init__(self, line: int | None = None, column: int | None = None) -> None:
        self.line, self.column = line, column
        super().__init__(f"not valid YAML{self.where}")

    @property
    def where(self) -> str:
        """`` (line L, column C)`` (1-based), or nothing when PyYAML gave no mark."""
        return "" if self.line is None else f" (line {self.line}, column {self.column})"


class Unsupported(Exception):
    """The text is outside the subset: PyYAML reads it."""


def load(text: str) -> Any:
    """The document in ``text`` (see the module docstring); :class:`Invalid` if it is none."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML that looks like JSON (comments, single quotes...): PyYAML's turn
    try:
        return parse(text)
    except Unsupported:
        pass
    import yaml  # noqa: PLC0415 - only for kubeconfigs outside the subset

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if mark is None:
            raise Invalid from None
        raise Invalid(mark.line + 1, mark.column + 1) from None


class _Line:
    __slots__ = ("indent", "text")

    def __init__(self, indent: int, text: str) -> None:
        self.indent = indent
        self.text = text


def parse(text: str) -> Any:
    """The subset of step 2 (a top-level mapping, or an empty document); else Unsupported."""
    lines = _lines(text)
    if not lines:
        return None
    if lines[0].indent != 0:
        raise Unsupported
    value, pos = _block(lines, 0, 0)
    if pos != len(lines) or not isinstance(value, dict):
        raise Unsupported
    return value


def _lines(text: str) -> list[_Line]:
    for char in text:
        code = ord(char)
        if (code < 0x20 and char not in "\n\r") or 0x7F <= code <= 0x9F or code in _ODD:
            raise Unsupported  # tabs, YAML 1.1's other line breaks, BOMs...: left to PyYAML
        if 0xD800 <= code <= 0xDFFF:
            raise Unsupported
    lines: list[_Line] = []
    for number, raw in enumerate(text.splitlines()):
        stripped = raw.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith(("---", "...", "%")):
            if number == len(lines) == 0 and stripped == "---" and not raw.startswith(" "):
                continue  # a document start on the first line
            raise Unsupported
        lines.append(_Line(len(raw) - len(stripped), stripped.rstrip(" ")))
    return lines


def _block(lines: list[_Line], pos: int, indent: int) -> tuple[Any, int]:
    text = lines[pos].text
    if _is_entry(text):
        return _sequence(lines, pos, indent)
    if _split_key(text) is not None:
        return _mapping(lines, pos, indent)
    raise Unsupported  # a scalar on a line of its own (multi-line plain scalar)


def _is_entry(text: str) -> bool:
    return text == "-" or text.startswith("- ")


def _mapping(lines: list[_Line], pos: int, indent: int) -> tuple[dict[str, Any], int]:
    result: dict[str, Any] = {}
    while pos < len(lines) and lines[pos].indent == indent:
        split = _split_key(lines[pos].text)
        if split is None:
            raise Unsupported
        key, rest = split
        pos += 1
        if rest:
            result[key] = _scalar(rest)
        elif pos < len(lines) and lines[pos].indent > indent:
            result[key], pos = _block(lines, pos, lines[pos].indent)
        elif pos < len(lines) and lines[pos].indent == indent and _is_entry(lines[pos].text):
            result[key], pos = _sequence(lines, pos, indent)  # an indentless sequence
        else:
            result[key] = None
    if pos < len(lines) and lines[pos].indent > indent:
        raise Unsupported
    return result, pos


def _sequence(lines: list[_Line], pos: int, indent: int) -> tuple[list[Any], int]:
    result: list[Any] = []
    while pos < len(lines) and lines[pos].indent == indent and _is_entry(lines[pos].text):
        item = lines[pos].text[1:].lstrip(" ")
        if not item:
            pos += 1
            if pos < len(lines) and lines[pos].indent > indent:
                value, pos = _block(lines, pos, lines[pos].indent)
            else:
                value = None
        elif _is_entry(item):
            raise Unsupported  # "- - x"
        elif _split_key(item) is not None:
            column = indent + len(lines[pos].text) - len(item)
            lines[pos] = _Line(column, item)  # the item is a mapping starting at its column
            value, pos = _mapping(lines, pos, column)
        else:
            value = _scalar(item)
            pos += 1
        result.append(value)
    if pos < len(lines) and lines[pos].indent > indent:
        raise Unsupported
    return result, pos


def _split_key(text: str) -> tuple[str, str] | None:
    """``(key, rest)`` for a ``key: rest`` line, None when the line holds no mapping key."""
    if text[0] in "'\"":
        key, end = _quoted(text)
        after = text[end:].lstrip(" ")
        if not after.startswith(":"):
            return None
        if len(after) > 1 and after[1] != " ":
            raise Unsupported
        return key, after[1:].strip(" ")
    index = _value_colon(text)
    if index < 0:
        return None
    key = text[:index].rstrip(" ")
    if not key or key[0] in _INDICATORS or " #" in key or key == "<<":
        raise Unsupported
    if _resolve(key) != key:
        raise Unsupported  # a key that is not a string (yes:, null:...)
    return key, text[index + 1 :].strip(" ")


def _value_colon(text: str) -> int:
    """Where ``: `` (or a final ``:``) is in a plain line, else -1."""
    index = text.find(":")
    while index >= 0:
        if index + 1 == len(text) or text[index + 1] == " ":
            return index
        index = text.find(":", index + 1)
    return -1


def _scalar(text: str) -> Any:
    """A value after ``key:`` or ``-``: quoted, ``{}``/``[]``, or plain (comments removed)."""
    if text[0] in "'\"":
        value, end = _quoted(text)
        rest = text[end:]
        if rest and not (rest[0] == " " and rest.lstrip(" ").startswith("#")):
            raise Unsupported  # anything but a comment after the closing quote
        return value
    comment = text.find(" #")
    if comment >= 0:
        text = text[:comment].rstrip(" ")
    if text in ("{}", "[]"):
        return {} if text == "{}" else []
    first = text[0]
    if first in _INDICATORS and not (first == "-" and len(text) > 1 and text[1] != " "):
        raise Unsupported
    if _value_colon(text) >= 0:
        raise Unsupported  # "a: b" inside a value
    return _resolve(text)


def _resolve(text: str) -> Any:
    """A plain scalar as YAML 1.1 (PyYAML's SafeLoader) reads it, within the subset."""
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    first = text[0]
    if first in _NUMERIC_START or (first in "+-" and len(text) > 1 and text[1] in _NUMERIC_START):
        raise Unsupported  # maybe a number or a date
    if text == "=":
        raise Unsupported
    return text


def _quoted(text: str) -> tuple[str, int]:
    """A one-line quoted scalar at the start of ``text``: ``(value, index after it)``."""
    quote = text[0]
    out: list[str] = []
    i = 1
    while i < len(text):
        char = text[i]
        if quote == "'":
            if char == "'":
                if text[i + 1 : i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                return "".join(out), i + 1
            out.append(char)
            i += 1
            continue
        if char == '"':
            return "".join(out), i + 1
        if char == "\\":
            i = _escape(text, i, out)
            continue
        out.append(char)
        i += 1
    raise Unsupported  # the scalar goes on on the next line


def _escape(text: str, i: int, out: list[str]) -> int:
    letter = text[i + 1 : i + 2]
    if letter in _ESCAPES:
        out.append(_ESCAPES[letter])
        return i + 2
    width = _HEX_ESCAPES.get(letter)
    digits = text[i + 2 : i + 2 + width] if width else ""
    if not width or len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise Unsupported
    code = int(digits, 16)
    if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
        raise Unsupported
    out.append(chr(code))
    return i + 2 + width
