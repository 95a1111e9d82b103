"""Names that moved between modules stay importable from the old place for one release, with a warning."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any


def moved_names(module: str, moved: dict[str, ModuleType]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `module`: a name in `moved` warns (DeprecationWarning, at the
    caller's line) and returns the object from its new module; any other is an AttributeError."""

    def __getattr__(name: str) -> Any:
        if name in moved:
            new = moved[name].__name__
            warnings.warn(f"{module}.{name} moved to {new}.{name}; import it from there ({module}'s alias goes in "
                          "the next release)", DeprecationWarning, stacklevel=2)
            return getattr(moved[name], name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
