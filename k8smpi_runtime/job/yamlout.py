"""A small block-style YAML emitter for manifests: dicts, lists, strings, ints, bools, None.

Why not JSON (which is YAML too)? A person reads what ``render`` prints, and the golden files
are reviewed: block style with the batch script as a literal block reads like the manifests in
deploy/. Why not PyYAML? The package needs no YAML library at run time otherwise, and this is
all it takes.

Safety first: a string is written plain only when it cannot mean anything but itself to a YAML
1.1 or 1.2 reader (kubectl's included: ``yes``/``on``/``y`` are booleans there, numbers are
numbers, ``~`` is null); otherwise it is double-quoted with JSON's escapes, which YAML's
double-quoted style shares. Multi-line text uses a literal block when it round-trips exactly.
"""

from __future__ import annotations

import json
import re
from typing import Any

_PLAIN = re.compile(r"^(?:[A-Za-z/_]|-(?=[A-Za-z_-]))[A-Za-z0-9_./=$()@+,:-]*$")
#: Kubernetes quantities such as 8Gi, 500m, 4k: never a number to YAML (no exponent, no 0x).
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P)$")
_RESERVED = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~", "=", "<<"})
_INDENT = "  "


def _plain_ok(text: str) -> bool:
    if _QUANTITY.match(text):
        return True
    return bool(_PLAIN.match(text)) and text.lower() not in _RESERVED and not text.endswith(":")


def scalar(value: object) -> str:
    """One scalar as YAML (strings plain when safe, else double-quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, str):
        return value if _plain_ok(value) else json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _literal_ok(text: str) -> bool:
    """A literal block keeps this text exactly: no tabs/CR/controls, no blank-but-space lines."""
    if "\n" not in text.rstrip("\n") and not text.endswith("\n"):
        return False
    if any(c in text for c in "\r\x85\u2028\u2029\ufeff") or re.search(
        r"[\x00-\x08\x0b-\x1f\x7f]", text
    ):
        return False
    lines = text.split("\n")
    if lines[0].startswith((" ", "\t")):
        return False
    return not any(line and not line.strip() for line in lines)


def _literal(text: str, indent: str) -> str:
    body = text.rstrip("\n")
    trailing = len(text) - len(body)
    chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
    lines = body.split("\n")
    if chomp == "+":
        lines += [""] * (trailing - 1)
    out = [f"|{chomp}"]
    out += [f"{indent}{line}" if line else "" for line in lines]
    return "\n".join(out)


def _emit(value: Any, indent: str, out: list[str], first_prefix: str) -> None:
    """Append ``value``'s lines; the first one starts with ``first_prefix`` (``key:`` or ``-``)."""
    if isinstance(value, dict) and value:
        items = list(value.items())
        for i, (key, item) in enumerate(items):
            prefix = first_prefix if i == 0 else indent
            head = f"{prefix}{scalar(str(key))}:"
            _emit_child(item, indent, out, head)
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            prefix = first_prefix if i == 0 else indent
            if isinstance(item, dict | list) and item:
                _emit(item, indent + _INDENT, out, f"{prefix}- ")
            else:
                out.append(f"{prefix}- {_inline(item, indent + _INDENT)}")
    else:
        out.append(f"{first_prefix}{_inline(value, indent)}")


def _emit_child(item: Any, indent: str, out: list[str], head: str) -> None:
    if isinstance(item, dict) and item:
        out.append(head)
        _emit(item, indent + _INDENT, out, indent + _INDENT)
    elif isinstance(item, list) and item:
        out.append(head)
        # Sequences under a key sit at the key's indentation (kubectl's own style).
        _emit(item, indent, out, indent)
    else:
        out.append(f"{head} {_inline(item, indent + _INDENT)}")


def _inline(value: Any, indent: str) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    if isinstance(value, str) and _literal_ok(value):
        return _literal(value, indent)
    return scalar(value)


def dump(doc: Any) -> str:
    """One document."""
    out: list[str] = []
    _emit(doc, "", out, "")
    return "\n".join(out) + "\n"


def dump_all(docs: list[Any]) -> str:
    """Documents separated by ``---``, as ``kubectl apply -f -`` reads them."""
    return "".join(f"---\n{dump(d)}" for d in docs)
