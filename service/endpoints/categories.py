"""Disease-activity categories (contract §4 "Category cut-points"; ra-domain.md §1.2–§1.3).

Comparisons are exact: the score is a ``Decimal`` (a ``float`` is read at its ``repr``, see
:mod:`service.endpoints.inputs`) and the cut-points are decimal constants, so a DAS28 of
exactly 2.6 is ``low`` and exactly 3.2 is still ``low``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from service.endpoints.inputs import Number, as_decimal


class Activity(str, Enum):
    """Codes of the ``*-activity`` outputs (local system ``http://trialfhir.org/fhir/CodeSystem/ra``)."""

    REMISSION = "remission"
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class Das28Cutpoints:
    """A DAS28 cut-point triple: remission < ``remission_below``; low ≤ ``low_max``;
    moderate ≤ ``moderate_max``; high above.

    Source: das-score.nl (2.6 / 3.2 / 5.1); Fleischmann R et al., Ann Rheum Dis 2015;74:1132
    (DAS28-CRP ≈ 2.4 remission, 2.9 low) and RMD Open 2017, PubMed 28255449 (4.6 high); contract §4
    makes the DAS28-CRP triple a per-study setting.
    """

    remission_below: Decimal
    low_max: Decimal
    moderate_max: Decimal

    def __post_init__(self) -> None:
        for name in ("remission_below", "low_max", "moderate_max"):
            object.__setattr__(self, name, as_decimal(getattr(self, name)))
        if not self.remission_below <= self.low_max <= self.moderate_max:
            raise ValueError(f"DAS28 cut-points must be non-decreasing: {self}")


DAS28_DEFAULT = Das28Cutpoints(Decimal("2.6"), Decimal("3.2"), Decimal("5.1"))
"""Default for DAS28-ESR and DAS28-CRP (contract §4)."""

DAS28_CRP_FLEISCHMANN = Das28Cutpoints(Decimal("2.4"), Decimal("2.9"), Decimal("4.6"))
"""Per-study alternative for DAS28-CRP (contract §4; Fleischmann 2015/2017)."""

SDAI_CUTPOINTS = (Decimal("3.3"), Decimal("11"), Decimal("26"))
"""SDAI upper bounds (inclusive) of remission, low and moderate activity (contract §4)."""
CDAI_CUTPOINTS = (Decimal("2.8"), Decimal("10"), Decimal("22"))
"""CDAI upper bounds (inclusive) of remission, low and moderate activity (contract §4)."""


def das28_activity(das28: Number, cutpoints: Das28Cutpoints = DAS28_DEFAULT) -> Activity:
    """DAS28 activity: remission < 2.6, low ≤ 3.2, moderate ≤ 5.1, high > 5.1 (default triple).

    Source: das-score.nl DAS28 cut-points; contract §4. Remission is a strict "<", the
    other bounds are inclusive. Pass :data:`DAS28_CRP_FLEISCHMANN` (2.4/2.9/4.6) for
    DAS28-CRP when the study setting asks for it.
    """
    value = as_decimal(das28)
    if value < cutpoints.remission_below:
        return Activity.REMISSION
    if value <= cutpoints.low_max:
        return Activity.LOW
    if value <= cutpoints.moderate_max:
        return Activity.MODERATE
    return Activity.HIGH


def _inclusive_bands(value: Decimal, bounds: tuple[Decimal, Decimal, Decimal]) -> Activity:
    remission_max, low_max, moderate_max = bounds
    if value <= remission_max:
        return Activity.REMISSION
    if value <= low_max:
        return Activity.LOW
    if value <= moderate_max:
        return Activity.MODERATE
    return Activity.HIGH


def sdai_activity(sdai: Number) -> Activity:
    """SDAI activity: remission ≤ 3.3, low ≤ 11, moderate ≤ 26, high > 26.

    Source: Aletaha D, Smolen JS, Clin Exp Rheumatol 2005;23(5 Suppl 39):S100; contract §4.
    """
    return _inclusive_bands(as_decimal(sdai), SDAI_CUTPOINTS)


def cdai_activity(cdai: Number) -> Activity:
    """CDAI activity: remission ≤ 2.8, low ≤ 10, moderate ≤ 22, high > 22.

    Source: Aletaha D, Smolen JS, Clin Exp Rheumatol 2005;23(5 Suppl 39):S100; contract §4.
    """
    return _inclusive_bands(as_decimal(cdai), CDAI_CUTPOINTS)


__all__ = [
    "CDAI_CUTPOINTS",
    "DAS28_CRP_FLEISCHMANN",
    "DAS28_DEFAULT",
    "SDAI_CUTPOINTS",
    "Activity",
    "Das28Cutpoints",
    "cdai_activity",
    "das28_activity",
    "sdai_activity",
]
