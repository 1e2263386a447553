"""recordclass: the package's dataclass decorator behaves as the standard one where the package uses it."""

import dataclasses
from typing import List, Optional

import pytest

from sstarota import recordclass


def both(**options):
    """The same class body under the standard decorator and ours."""
    def make(decorate, fld):
        @decorate(**options)
        class Point:
            x: int
            y: int = 2
            tags: List[str] = fld(default_factory=list)
            note: Optional[str] = fld(default=None, repr=False)
            unannotated = "a class attribute, not a field"

        return Point
    return make(dataclasses.dataclass, dataclasses.field), make(recordclass.dataclass, recordclass.field)


@pytest.mark.parametrize("frozen", [False, True])
def test_construction_defaults_repr_and_equality_match_the_standard(frozen):
    std, ours = both(frozen=frozen)
    for args, kwargs in [((1,), {}), ((1, 5), {}), ((1,), {"tags": ["a"]}), ((), {"x": 3, "note": "n"})]:
        a, b = std(*args, **kwargs), ours(*args, **kwargs)
        assert repr(a) == repr(b)
        assert dataclasses.asdict(a) == recordclass.asdict(b)
        assert (b == ours(*args, **kwargs)) and not (b == ours(99)) and b != a  # another class is never equal
    assert std(1).tags is not std(1).tags and ours(1).tags is not ours(1).tags  # a fresh default per instance
    assert ours.unannotated == std.unannotated and "unannotated" not in recordclass.asdict(ours(1))
    for call in (lambda c: c(), lambda c: c(1, 2, [], None, 5), lambda c: c(1, x=1), lambda c: c(1, z=1)):
        with pytest.raises(TypeError):
            call(std)
        with pytest.raises(TypeError):
            call(ours)


def test_frozen_refuses_assignment_and_hashes_by_value_the_mutable_does_not_hash():
    _, ours = both(frozen=True)
    p = ours(1)
    with pytest.raises(recordclass.FrozenInstanceError):
        p.x = 2
    with pytest.raises(AttributeError):
        del p.x
    assert hash(ours(1, 2, ())) == hash(ours(1, 2, ()))
    _, mutable = both()
    m = mutable(1)
    m.x = 7
    assert m.x == 7
    with pytest.raises(TypeError):
        hash(m)


def test_inheritance_post_init_replace_and_nested_asdict():
    @recordclass.dataclass(frozen=True)
    class Base:
        a: int
        b: str = "b"

    @recordclass.dataclass(frozen=True)
    class Child(Base):
        c: int = 3
        kind = "child"  # a class attribute overriding nothing

    c = Child(1)
    assert (c.a, c.b, c.c) == (1, "b", 3) and repr(c) == "test_inheritance_post_init_replace_and_nested_asdict." \
        "<locals>.Child(a=1, b='b', c=3)"
    assert recordclass.replace(c, b="x") == Child(1, "x", 3)

    @recordclass.dataclass
    class Holder:
        items: list
        seen: int = 0

        def __post_init__(self):
            self.seen = len(self.items)

    h = Holder([c, [c]])
    assert h.seen == 2
    assert recordclass.asdict(h) == {"items": [{"a": 1, "b": "b", "c": 3}, [{"a": 1, "b": "b", "c": 3}]], "seen": 2}
