"""k8smpi_runtime.records: a Record behaves as the typing.NamedTuple that mypy sees."""

from __future__ import annotations

import copy
import pickle
import sys
from typing import NamedTuple

import pytest

from k8smpi_runtime.records import Record


class Point(Record):
    """A point."""

    x: int
    y: int = 0
    label: str | None = None

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)

    def moved(self, dx: int) -> Point:
        return self._replace(x=self.x + dx)


class Secret(Record):
    name: str
    token: str = ""

    def __repr__(self) -> str:
        return f"Secret({self.name!r}, ...)"


class Twin(NamedTuple):
    x: int
    y: int = 0
    label: str | None = None


def test_construction_and_access_as_a_namedtuple() -> None:
    for cls in (Point, Twin):
        p = cls(1, label="a")
        assert (p.x, p.y, p.label) == (1, 0, "a") == tuple(p)
        assert cls(x=1, y=2) == cls(1, 2) == (1, 2, None)
        assert cls._fields == ("x", "y", "label")
        assert hash(cls(1, 2)) == hash((1, 2, None))
        assert cls(1)._replace(y=5) == (1, 5, None)
        assert repr(cls(1, 2)) == f"{cls.__name__}(x=1, y=2, label=None)"
        with pytest.raises(AttributeError):
            p.x = 3  # type: ignore[misc]
        with pytest.raises(TypeError):
            cls()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            cls(1, 2, "l", 4)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            cls(1, x=2)  # type: ignore[misc]
        with pytest.raises(TypeError):
            cls(1, z=2)  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="unexpected field names"):
            cls(1)._replace(z=2)  # type: ignore[call-arg]


def test_methods_properties_docstring_repr_and_copies() -> None:
    p = Point(-2, 3)
    assert p.norm1 == 5
    assert p.moved(4) == Point(2, 3)
    assert type(p.moved(1)) is Point
    assert Point.__doc__ == "A point."
    assert repr(Secret("n", "t0ken")) == "Secret('n', ...)"
    assert copy.deepcopy(p) == p
    assert pickle.loads(pickle.dumps(p)) == p  # noqa: S301 - our own bytes
    assert isinstance(p, tuple)


def test_no_typing_or_collections_at_import() -> None:
    import subprocess  # noqa: PLC0415

    probe = "import sys, k8smpi_runtime.records; print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(eval(out.stdout))  # noqa: S307 - our own probe's list
    assert not loaded & {"typing", "collections", "dataclasses"}, loaded
