"""Typed record classes: the dataclasses decorator, without its start-up cost.

The installer's state is typed classes (plans, records, events, slots). With the standard
`dataclasses`, each class costs an exec() of generated source for each of __init__,
__repr__ and __eq__ when its module is imported, and `dataclasses` imports `inspect` (with
`ast`, `dis` and their kin): together about a third of what a small install spent before it
read its first byte. This module offers the same `dataclass`, `field`, `asdict` and `replace`
for the subset the package uses (fields declared by annotations, defaults, default
factories, `repr=False`, `frozen=True`, `__post_init__`, inheritance), built from closures
at class creation instead of from source. The type checker is shown the standard ones
(`TYPE_CHECKING` below), so every constructor call stays checked; tests/test_recordclass.py
holds the runtime ones to the standard's behaviour.
"""

TYPE_CHECKING = False  # true for the type checker only (it reads the standard dataclasses)

if TYPE_CHECKING:
    from dataclasses import FrozenInstanceError, asdict, dataclass, field, replace
else:

    class FrozenInstanceError(AttributeError):
        """An assignment to a field of a frozen record."""

    _MISSING = object()

    class _Field:
        __slots__ = ("default", "default_factory", "repr")

        def __init__(self, default, default_factory, repr):
            self.default = default
            self.default_factory = default_factory
            self.repr = repr

    def field(*, default=_MISSING, default_factory=_MISSING, repr=True):
        """A field's default (a value, or a factory called for each instance) and whether repr() shows it."""
        return _Field(default, default_factory, repr)

    def _is_class_var(annotation):
        text = annotation if isinstance(annotation, str) else repr(annotation)
        return text.startswith(("ClassVar", "typing.ClassVar"))

    def _collect(cls):
        """{name: _Field} of cls: its bases' fields first, then its own annotations, in order."""
        fields = {}
        for base in reversed(cls.__mro__[1:]):
            fields.update(getattr(base, "__record_fields__", {}))
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if _is_class_var(annotation):
                continue
            value = cls.__dict__.get(name, _MISSING)
            if isinstance(value, _Field):
                spec = value
                if spec.default is _MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, spec.default)
            else:
                spec = _Field(value, _MISSING, True)
            fields[name] = spec
        return fields

    def _make_init(cls, fields, frozen):
        names = tuple(fields)
        defaults = {n: f.default for n, f in fields.items() if f.default is not _MISSING}
        factories = {n: f.default_factory for n, f in fields.items() if f.default_factory is not _MISSING}
        setter = object.__setattr__ if frozen else setattr
        post_init = getattr(cls, "__post_init__", None) is not None
        count = len(names)

        def __init__(self, *args, **kwargs):
            if len(args) > count:
                raise TypeError("%s() takes %d positional arguments but %d were given"
                                % (cls.__name__, count, len(args)))
            for name, value in zip(names, args):
                setter(self, name, value)
            for name in names[len(args):]:
                if name in kwargs:
                    value = kwargs.pop(name)
                elif name in defaults:
                    value = defaults[name]
                elif name in factories:
                    value = factories[name]()
                else:
                    raise TypeError("%s() missing required argument: %r" % (cls.__name__, name))
                setter(self, name, value)
            if kwargs:
                raise TypeError("%s() got an unexpected or repeated keyword argument %r"
                                % (cls.__name__, next(iter(kwargs))))
            if post_init:
                self.__post_init__()

        return __init__

    def _process(cls, frozen):
        fields = _collect(cls)
        names = tuple(fields)
        shown = tuple(n for n, f in fields.items() if f.repr)
        cls.__record_fields__ = fields
        cls.__init__ = _make_init(cls, fields, frozen)

        def __repr__(self):
            return "%s(%s)" % (type(self).__qualname__, ", ".join("%s=%r" % (n, getattr(self, n)) for n in shown))

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)

        cls.__repr__ = __repr__
        cls.__eq__ = __eq__
        if frozen:
            def __hash__(self):
                return hash(tuple(getattr(self, n) for n in names))

            def __setattr__(self, name, value):
                raise FrozenInstanceError("cannot assign to field %r" % name)

            def __delattr__(self, name):
                raise FrozenInstanceError("cannot delete field %r" % name)

            cls.__hash__ = __hash__
            cls.__setattr__ = __setattr__
            cls.__delattr__ = __delattr__
        else:
            cls.__hash__ = None
        return cls

    def dataclass(cls=None, *, frozen=False):
        """@dataclass or @dataclass(frozen=True), as the standard decorator."""
        if cls is None:
            return lambda c: _process(c, frozen)
        return _process(cls, frozen)

    def _copy(value):
        if hasattr(type(value), "__record_fields__"):
            return asdict(value)
        if isinstance(value, (list, tuple)):
            return type(value)(_copy(v) for v in value)
        if isinstance(value, dict):
            return {_copy(k): _copy(v) for k, v in value.items()}
        return value

    def asdict(obj):
        """The record's fields as a dict, records inside it turned into dicts too."""
        return {n: _copy(getattr(obj, n)) for n in type(obj).__record_fields__}

    def replace(obj, **changes):
        """A new record with some fields changed."""
        values = {n: getattr(obj, n) for n in type(obj).__record_fields__}
        values.update(changes)
        return type(obj)(**values)


__all__ = ["FrozenInstanceError", "asdict", "dataclass", "field", "replace"]
