"""Visit assignment and selection (contract §3, exactly).

- The study day of a value is the calendar date of its ``effective[x]`` as written minus
  the calendar date of day 0 (:mod:`.reading`); windows are inclusive at both ends.
- A value whose ``encounter`` references an Encounter carrying the study-visit extension
  is assigned to that visit instead of by date, and wins over every value assigned by date;
  a visit name the schedule does not have is reported and the value ignored. (The
  ``study-visit`` extension on an input Observation itself is descriptive only: contract §3
  assigns by date or by encounter.)
- Otherwise it goes to the visit whose window holds its study day (windows never overlap);
  a value outside every window is reported and used nowhere.
- Of several values of one measure assigned to one visit the one closest to the target day
  wins; ties: the later ``effective[x]`` instant, then the later ``meta.lastUpdated``,
  then (only so the result never depends on input order) the larger reference.
- Values that were set aside (contract §2) take no part in selection; they are placed on
  their visit the same way only so the outputs they would have fed can name them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Optional

from schemas.trial import Visit
from service.derivation.records import InputValue, SetAside


class Schedule:
    """A study schedule with O(1) lookup of the visit of a study day."""

    def __init__(self, visits: Sequence[Visit]) -> None:
        self.visits: tuple[Visit, ...] = tuple(sorted(visits, key=lambda v: v.target_day))
        self._by_name = {v.name: v for v in self.visits}
        self._by_day = {day: v for v in self.visits for day in range(v.first_day, v.last_day + 1)}
        self.baseline: Visit = self._by_name["BL"]
        self.order = {v.name: i for i, v in enumerate(self.visits)}

    def by_day(self, day: int) -> Optional[Visit]:
        return self._by_day.get(day)

    def by_name(self, name: str) -> Optional[Visit]:
        return self._by_name.get(name)

    def after_baseline(self, visit: Visit) -> bool:
        """Change endpoints exist for these visits only (contract §4)."""
        return visit.target_day > self.baseline.target_day


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one value goes: its visit (or none) and how it got there."""

    visit: Optional[Visit]
    study_day: Optional[int]
    explicit: bool
    problem: Optional[str] = None
    """Why the value is used nowhere (outside every window, unknown visit name)."""


def place(
    day: Optional[date], encounter: Optional[str], day0: Optional[date], schedule: Schedule, encounter_visits: dict[str, Optional[str]]
) -> Placement:
    """The visit of a value dated ``day`` (contract §3)."""
    study_day = (day - day0).days if day is not None and day0 is not None else None
    named = encounter_visits.get(encounter) if encounter else None
    if named is not None:
        visit = schedule.by_name(named)
        if visit is None:
            return Placement(None, study_day, True, f"Encounter/{encounter} names visit '{named}', which the schedule does not have")
        return Placement(visit, study_day, True)
    if study_day is None:
        return Placement(None, None, False, "day 0 of the subject is unknown" if day0 is None else "no date")
    visit = schedule.by_day(study_day)
    if visit is None:
        return Placement(None, study_day, False, f"study day {study_day} is outside every visit window")
    return Placement(visit, study_day, False)


@dataclass(slots=True)  # not frozen: built in bulk (a frozen __init__ costs ~4× more); never mutated
class Selected:
    """The value chosen for one subject × visit × measure, with its study day."""

    value: InputValue
    study_day: Optional[int]
    explicit: bool


@dataclass(slots=True)
class Assignment:
    """One subject's values by visit, and what was used nowhere."""

    selected: dict[str, dict[str, Selected]] = field(default_factory=dict)
    """visit name → measure → the selected value."""
    set_aside: dict[str, dict[str, list[SetAside]]] = field(default_factory=dict)
    """visit name → measure → set-aside values placed there (for the notes)."""
    unused: list[tuple[str, str]] = field(default_factory=list)
    """(reference, why) of usable values that no visit takes."""


def assign(
    values: Iterable[InputValue],
    set_aside: Iterable[SetAside],
    day0: Optional[date],
    schedule: Schedule,
    encounter_visits: dict[str, Optional[str]],
) -> Assignment:
    """Select one value per visit × measure for one subject (module docstring)."""
    out = Assignment()
    latest: dict[str, InputValue] = {}
    for v in values:  # a resource counts once, by its latest version (re-sent rows change nothing)
        seen = latest.get(v.source.ref)
        if seen is None or (v.source.version, v.source.last_updated_us) > (seen.source.version, seen.source.last_updated_us):
            latest[v.source.ref] = v
    best: dict[tuple[str, str], tuple[tuple[bool, int, int, int, str], InputValue, Optional[int], bool]] = {}
    by_day = schedule.by_day
    day0_ordinal = day0.toordinal() if day0 is not None else 0
    for ref, v in latest.items():
        src = v.source
        if v.encounter is not None and encounter_visits.get(v.encounter) is not None:
            where = place(src.day, v.encounter, day0, schedule, encounter_visits)
            visit, study_day, explicit = where.visit, where.study_day, True
            if visit is None:
                out.unused.append((ref, where.problem or "not placed"))
                continue
        else:  # by date (the common case, inlined)
            if day0 is None:
                out.unused.append((ref, "day 0 of the subject is unknown"))
                continue
            study_day = src.day.toordinal() - day0_ordinal  # = (day − day0).days
            visit, explicit = by_day(study_day), False
            if visit is None:
                out.unused.append((ref, f"study day {study_day} is outside every visit window"))
                continue
        key = (explicit, -abs(study_day - visit.target_day) if study_day is not None else -(1 << 30), src.instant_us, src.last_updated_us, ref)
        slot = (visit.name, v.measure)
        current = best.get(slot)
        if current is None or key > current[0]:
            best[slot] = (key, v, study_day, explicit)
    for (visit_name, measure), (_, chosen, study_day, explicit) in best.items():
        out.selected.setdefault(visit_name, {})[measure] = Selected(chosen, study_day, explicit)
    out.unused.sort()
    for s in sorted(set_aside, key=lambda s: s.ref):
        if s.measure is None:
            continue
        where = place(s.day, s.encounter, day0, schedule, encounter_visits)
        if where.visit is not None:
            out.set_aside.setdefault(where.visit.name, {}).setdefault(s.measure, []).append(s)
    return out


__all__ = ["Assignment", "Placement", "Schedule", "Selected", "assign", "place"]
