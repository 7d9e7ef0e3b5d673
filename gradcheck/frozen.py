"""A hashable, read-only mapping for hyperparameters and init specs."""

from collections.abc import Mapping

import numpy as np

__all__ = ["Frozen", "freeze_value", "thaw_value"]


def freeze_value(v):
    """Lists become tuples and NumPy scalars Python ones, so equal specs hash equally."""
    if isinstance(v, (list, tuple)):
        return tuple(freeze_value(x) for x in v)
    if isinstance(v, Mapping):
        return Frozen(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def thaw_value(v):
    """The JSON form: tuples as lists, mappings as dicts."""
    if isinstance(v, tuple):
        return [thaw_value(x) for x in v]
    if isinstance(v, Mapping):
        return {k: thaw_value(x) for k, x in v.items()}
    return v


class Frozen(Mapping):
    __slots__ = ("_items", "_dict")

    def __init__(self, data=()):
        items = dict(data).items()
        object.__setattr__(self, "_items", tuple(sorted((str(k), freeze_value(v)) for k, v in items)))
        object.__setattr__(self, "_dict", dict(self._items))

    def __getitem__(self, key):
        return self._dict[key]

    def __iter__(self):
        return iter(self._dict)

    def __len__(self):
        return len(self._items)

    def __hash__(self):
        return hash(self._items)

    def __eq__(self, other):
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __setattr__(self, name, value):
        raise AttributeError("Frozen is read-only")

    def __repr__(self):
        return "{" + ", ".join(f"{k}={v!r}" for k, v in self._items) + "}"
