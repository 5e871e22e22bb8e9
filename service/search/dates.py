"""Date search on instants stored as microseconds since the epoch.

A FHIR date value is a range at its precision (https://hl7.org/fhir/R4/search.html#date):
``2024-03`` covers the whole month. Prefixes compare the stored instant with that range.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import ColumnElement, and_, or_

from service.search.query import SearchClause

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_LEGACY = {">=": "ge", "<=": "le", ">": "gt", "<": "lt", "=": "eq"}


class DateRangeError(ValueError):
    """The value is not a FHIR date/dateTime/instant."""


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000) if dt.microsecond == 0 else (
        calendar.timegm(dt.utctimetuple()) * 1_000_000 + dt.microsecond
    )


def date_range_us(text: str) -> tuple[int, int]:
    """[start, end) in µs since the epoch for a FHIR date at its precision (UTC if no zone)."""
    m = _DATE.match(text)
    if not m:
        raise DateRangeError(f"'{text}' is not a valid date, dateTime or instant (e.g. 2024-03-01T10:00:00Z)")
    y = int(m["y"])
    try:
        if m["m"] is None:
            start = datetime(y, 1, 1, tzinfo=timezone.utc)
            end = datetime(y + 1, 1, 1, tzinfo=timezone.utc)
        elif m["d"] is None:
            mo = int(m["m"])
            start = datetime(y, mo, 1, tzinfo=timezone.utc)
            end = datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=timezone.utc)
        elif m["H"] is None:
            start = datetime(y, int(m["m"]), int(m["d"]), tzinfo=timezone.utc)
            end = start + timedelta(days=1)
        else:
            tz = timezone.utc
            if m["tz"] and m["tz"] != "Z":
                sign = 1 if m["tz"][0] == "+" else -1
                hh, mm = m["tz"][1:].split(":")
                tz = timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))
            sec = int(m["S"] or 0)
            frac = m["f"] or ""
            micro = int((frac[1:] + "000000")[:6]) if frac else 0
            start = datetime(y, int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"]), sec, micro, tzinfo=tz)
            if m["S"] is None:
                step = timedelta(minutes=1)
            elif not frac:
                step = timedelta(seconds=1)
            else:
                step = timedelta(microseconds=max(1, 10 ** (6 - min(6, len(frac) - 1))))
            end = start + step
    except ValueError as exc:
        raise DateRangeError(f"'{text}' is not a valid date: {exc}") from None
    return _us(start), _us(end)


def split_prefix(value: str) -> tuple[str, str]:
    for legacy, prefix in _LEGACY.items():
        if value.startswith(legacy) and not value[len(legacy):len(legacy) + 1].isalpha():
            return prefix, value[len(legacy):]
    if value[:2] in _PREFIXES and len(value) > 2 and value[2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def instant_condition(prefix: str, column: ColumnElement[int], start: int, end: int) -> ColumnElement[bool]:
    """Compare a stored instant with the range [start, end)."""
    if prefix == "eq":
        return and_(column >= start, column < end)
    if prefix == "ne":
        return or_(column < start, column >= end)
    if prefix in ("gt", "sa"):
        return column >= end
    if prefix in ("lt", "eb"):
        return column < start
    if prefix == "ge":
        return column >= start
    if prefix == "le":
        return column < end
    # ap: within 10 % of the distance to now is the spec's suggestion; one day is used here.
    day = 86_400_000_000
    return and_(column >= start - day, column < end + day)


def parse_date_clause(clause: SearchClause, column: ColumnElement[int]) -> ColumnElement[bool]:
    """OR of the clause's values, each ``[prefix]date``."""
    parts = []
    for value in clause.values:
        prefix, text = split_prefix(value)
        start, end = date_range_us(text)
        parts.append(instant_condition(prefix, column, start, end))
    return or_(*parts)
