"""The bounds every client filter is held to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

_DEPTH_CEILING: Final = 100


@dataclass(frozen=True)
class Limits:
    """Bounds on client filters.

    They exist because every distinct filter costs a parse here and a shape (memory and
    disk) in Electric, and because tree-walking code, here and in Electric, recurses.
    """

    max_length: int = 4096
    max_depth: int = 32
    max_nodes: int = 256
    max_params: int = 64

    def __post_init__(self) -> None:
        for name in ("max_length", "max_depth", "max_nodes", "max_params"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}")
        if self.max_depth > _DEPTH_CEILING:
            raise ValueError(
                f"Limits.max_depth above {_DEPTH_CEILING} would overflow the deparser's recursion"
            )


DEFAULT_LIMITS: Final = Limits()
