"""Result type shared by every derivation: a value, or the reason it could not be computed.

Contract §4: "a score, category, response or remission with any input missing is not
computed ... and neither is one whose formula is undefined for the value", and §2: a value
in a unit that cannot be converted "is not guessed ... and the reason is reported". The
derivation functions therefore never raise on clinical input; they return
``Computed(value)`` or ``NotComputable(reason)``, and the reason ends up in the derived
Observation's ``dataAbsentReason`` note (§5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, Union

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class Computed(Generic[T]):
    """A successfully derived value."""

    value: T

    @property
    def computable(self) -> bool:
        """Always ``True``; lets callers branch without ``isinstance``."""
        return True

    def map(self, fn: Callable[[T], U]) -> Computed[U]:
        """Apply a total function to the value."""
        return Computed(fn(self.value))

    def then(self, fn: Callable[[T], Result[U]]) -> Result[U]:
        """Chain a derivation that may itself be not computable."""
        return fn(self.value)


@dataclass(frozen=True, slots=True)
class NotComputable:
    """A value that is not computed, with a human-readable reason (never empty)."""

    reason: str

    def __post_init__(self) -> None:
        if not self.reason:
            raise ValueError("NotComputable needs a reason")

    @property
    def computable(self) -> bool:
        """Always ``False``."""
        return False

    def map(self, fn: Callable[[object], object]) -> NotComputable:
        """Propagate unchanged."""
        return self

    def then(self, fn: Callable[[object], object]) -> NotComputable:
        """Propagate unchanged."""
        return self


Result = Union[Computed[T], NotComputable]

__all__ = ["Computed", "NotComputable", "Result"]
