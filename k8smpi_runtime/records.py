"""Immutable records for kubexec's start-up path: ``class X(Record)`` with annotated fields.

To mypy a Record is :class:`typing.NamedTuple`; at run time the class body becomes a tuple
subclass with the same fields (read-only properties), defaults, methods and docstring, built
here without :mod:`typing`, :mod:`dataclasses` or :mod:`collections`. kubexec starts once per
remote node per MPI job, and on Python 3.11 (measured here) ``import dataclasses`` costs about
9 ms (it imports :mod:`inspect`) and each frozen dataclass about 1.1 ms to create; :mod:`typing`
2.4 ms and each ``typing.NamedTuple`` 0.85 ms; :mod:`collections` (for ``namedtuple``) 1.7 ms,
on the path of every call, the control master's client included.

Semantics are a NamedTuple's: immutable, positional or keyword construction (a missing,
unknown or repeated argument is a TypeError), ``_replace``, ``_fields``, equality and hashing
as tuples, ``Name(field=value, ...)`` as repr. A class may define methods, properties and its
own ``__repr__`` (to keep secrets out of it); a field default must be immutable.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    from _operator import itemgetter

    class _Fields(tuple):
        """What every record class gets: construction, ``_replace``, repr, copying."""

        __slots__ = ()
        _fields: tuple[str, ...] = ()
        _field_defaults: dict = {}  # noqa: RUF012 - every record class sets its own

        def __new__(cls, *args, **kwargs):
            fields = cls._fields
            if len(args) > len(fields):
                raise TypeError(
                    f"{cls.__name__}() takes {len(fields)} arguments but {len(args)} were given"
                )
            values = list(args)
            for name in fields[len(args) :]:
                if name in kwargs:
                    values.append(kwargs.pop(name))
                elif name in cls._field_defaults:
                    values.append(cls._field_defaults[name])
                else:
                    raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
            if kwargs:
                raise TypeError(
                    f"{cls.__name__}() got unexpected or repeated arguments: {sorted(kwargs)}"
                )
            return tuple.__new__(cls, values)

        def _replace(self, **changes):
            values = [
                changes.pop(name, value) for name, value in zip(self._fields, self, strict=True)
            ]
            if changes:
                raise ValueError(f"Got unexpected field names: {sorted(changes)!r}")
            return tuple.__new__(type(self), values)

        def __repr__(self):
            shown = ", ".join(f"{n}={v!r}" for n, v in zip(self._fields, self, strict=True))
            return f"{type(self).__name__}({shown})"

        def __getnewargs__(self):
            return tuple(self)

    class _RecordMeta(type):
        def __new__(mcls, name, bases, namespace):
            if not bases:  # Record itself
                return super().__new__(mcls, name, bases, namespace)
            fields = tuple(namespace.get("__annotations__", ()))
            body = {k: v for k, v in namespace.items() if k not in fields}
            body["__slots__"] = ()
            body["_fields"] = fields
            body["_field_defaults"] = {f: namespace[f] for f in fields if f in namespace}
            for index, field in enumerate(fields):
                body[field] = property(itemgetter(index), doc=f"Alias for field {index}")
            return type(name, (_Fields,), body)

    class Record(metaclass=_RecordMeta):
        """Base of immutable records (see the module docstring)."""

        __slots__ = ()


__all__ = ["Record"]
