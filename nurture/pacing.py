"""Anti-harassment pacing: for one person and one candidate email, send now or when, and why.

Pure: plain data in, a `Decision` out, `now` passed in. Calendar rules (quiet hours,
weekdays, emails per local day) are read on the contact's own wall clock, so DST gaps
and repeats, half-hour zones and windows that wrap midnight fall out of one walk over
spans of constant UTC offset.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK = timedelta(days=7)
_DAY = timedelta(days=1)
_MAX_ROUNDS = 64
_SPAN = timedelta(days=7)


@dataclass(frozen=True)
class Policy:
    per_day: int = 1
    per_week: int = 3
    min_gap: timedelta = timedelta(hours=20)
    quiet_start: time | None = time(20, 0)
    quiet_end: time | None = time(8, 0)
    weekdays: frozenset[int] = frozenset(range(5))

    def is_quiet(self, local: time) -> bool:
        if self.quiet_start is None or self.quiet_end is None:
            return False
        if self.quiet_start < self.quiet_end:
            return self.quiet_start <= local < self.quiet_end
        return local >= self.quiet_start or local < self.quiet_end


@dataclass(frozen=True)
class Hold:
    """One rule that keeps the email from going now."""

    rule: str
    detail: str
    until: datetime | None


@dataclass(frozen=True)
class Decision:
    send_at: datetime | None
    holds: tuple[Hold, ...] = field(default=())

    @property
    def send_now(self) -> bool:
        return not self.holds and self.send_at is not None

    @property
    def reason(self) -> str:
        return "; ".join(hold.detail for hold in self.holds)


def decide(
    *,
    now: datetime,
    sent: Sequence[datetime],
    policy: Policy,
    zone: ZoneInfo,
    suppressed: str | None = None,
) -> Decision:
    """Send now, or the earliest instant the email may go with every rule that holds it.

    `sent` holds the UTC instants of this person's past marketing emails, oldest first.
    `suppressed` is the reason the person may never be written to, if there is one.
    """
    if suppressed:
        return Decision(None, (Hold("suppressed", suppressed, None),))
    day_counts = _local_day_counts(sent, now, zone)
    rules: list[tuple[str, Callable[[datetime], datetime | None], Callable[[datetime], str]]] = [
        ("min_gap", lambda t: _after_gap(t, sent, policy), lambda t: _gap_text(policy)),
        ("per_week", lambda t: _after_week_cap(t, sent, policy), lambda t: _week_text(policy)),
        (
            "per_day",
            lambda t: _walk(
                t, zone, lambda w: day_counts.get(w.date(), 0) < policy.per_day, _next_midnight
            ),
            lambda t: _day_text(t, zone, policy),
        ),
        (
            "weekday",
            lambda t: _walk(t, zone, lambda w: w.weekday() in policy.weekdays, _next_midnight),
            lambda t: _weekday_text(t, zone),
        ),
        (
            "quiet_hours",
            lambda t: _walk(
                t,
                zone,
                lambda w: not policy.is_quiet(w.time()),
                lambda w: _next_wall_time(w, policy.quiet_end),
            ),
            lambda t: _quiet_text(policy, zone),
        ),
    ]
    held: dict[str, Hold] = {}
    candidate = now
    for name, next_ok, describe in rules:  # every reason why not now
        allowed = next_ok(now)
        if allowed is None:
            return Decision(None, (Hold(name, describe(now), None),))
        if allowed > now:
            held[name] = Hold(name, describe(now), allowed)
            candidate = max(candidate, allowed)
    if candidate == now:
        return Decision(now)
    for _ in range(_MAX_ROUNDS):  # then the earliest instant every rule allows
        moved = False
        for name, next_ok, describe in rules:
            allowed = next_ok(candidate)
            if allowed is None:
                return Decision(None, (*held.values(), Hold(name, describe(candidate), None)))
            if allowed > candidate:
                if name not in held:
                    held[name] = Hold(name, describe(candidate), allowed)
                candidate = allowed
                moved = True
        if not moved:
            holds = tuple(Hold(h.rule, h.detail, candidate) for h in held.values())
            return Decision(candidate, holds)
    return Decision(None, (*held.values(), Hold("pacing", "no allowed instant found", None)))


def _after_gap(t: datetime, sent: Sequence[datetime], policy: Policy) -> datetime:
    index = bisect_right(sent, t)
    if index == 0:
        return t
    return max(t, sent[index - 1] + policy.min_gap)


def _after_week_cap(t: datetime, sent: Sequence[datetime], policy: Policy) -> datetime:
    """Earliest instant >= t with fewer than `per_week` sends in the 7 days up to it."""
    hi = bisect_right(sent, t)
    lo = bisect_right(sent, t - WEEK)
    excess = (hi - lo) - policy.per_week
    if excess < 0:
        return t
    return max(t, sent[lo + excess] + WEEK)


def _local_day_counts(sent: Sequence[datetime], now: datetime, zone: ZoneInfo) -> dict[date, int]:
    counts: dict[date, int] = {}
    for instant in sent[bisect_left(sent, now - 2 * _DAY) :]:
        day = instant.astimezone(zone).date()
        counts[day] = counts.get(day, 0) + 1
    return counts


def _spans(start: datetime, zone: ZoneInfo) -> Iterator[tuple[datetime, datetime, timedelta]]:
    """Consecutive spans [a, b) from `start` over which the zone's UTC offset is constant."""
    a = start
    while True:
        offset = _offset(a, zone)
        b = a + _SPAN
        probe = a
        while probe < a + _SPAN:
            following = probe + _DAY
            if _offset(following, zone) != offset:
                b = _first_change(probe, following, offset, zone)
                break
            probe = following
        yield a, b, offset
        a = b


def _first_change(lo: datetime, hi: datetime, offset: timedelta, zone: ZoneInfo) -> datetime:
    """First whole second in (lo, hi] whose offset is not `offset` (zones change on seconds)."""
    low, high = int(lo.timestamp()), int(hi.timestamp())
    while high - low > 1:
        mid = (low + high) // 2
        if _offset(datetime.fromtimestamp(mid, UTC), zone) == offset:
            low = mid
        else:
            high = mid
    return datetime.fromtimestamp(high, UTC)


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    return instant.astimezone(zone).utcoffset() or timedelta()


def _walk(
    t: datetime,
    zone: ZoneInfo,
    ok: Callable[[datetime], bool],
    next_change: Callable[[datetime], datetime],
) -> datetime | None:
    """Earliest instant >= t whose local wall time satisfies `ok`.

    `next_change(wall)` gives the next wall time after `wall` at which `ok` may change.
    """
    offset = _offset(t, zone)
    if ok((t + offset).replace(tzinfo=None)):
        return t
    horizon = t + timedelta(days=30)
    for a, b, offset in _spans(t, zone):
        if a > horizon:
            return None
        wall = (a + offset).replace(tzinfo=None)
        end = (b + offset).replace(tzinfo=None)
        while wall < end:
            if ok(wall):
                return (wall - offset).replace(tzinfo=UTC)
            wall = next_change(wall)
    return None  # pragma: no cover - _spans never ends


def _next_midnight(wall: datetime) -> datetime:
    return datetime.combine(wall.date() + _DAY, time())


def _next_wall_time(wall: datetime, at: time | None) -> datetime:
    assert at is not None
    candidate = datetime.combine(wall.date(), at)
    return candidate if candidate > wall else candidate + _DAY


def _local(t: datetime, zone: ZoneInfo) -> datetime:
    return t.astimezone(zone)


def _gap_text(policy: Policy) -> str:
    return f"minimum gap of {_hours(policy.min_gap)} since the last email"


def _week_text(policy: Policy) -> str:
    return f"cap of {policy.per_week} emails in any 7 days reached"


def _day_text(t: datetime, zone: ZoneInfo, policy: Policy) -> str:
    day = _local(t, zone).strftime("%a %d %b")
    plural = "email" if policy.per_day == 1 else "emails"
    return f"cap of {policy.per_day} {plural} a day reached for {day} ({zone.key})"


def _weekday_text(t: datetime, zone: ZoneInfo) -> str:
    return f"{_local(t, zone).strftime('%A')} is not a sending day ({zone.key})"


def _quiet_text(policy: Policy, zone: ZoneInfo) -> str:
    assert policy.quiet_start and policy.quiet_end
    start, end = policy.quiet_start.strftime("%H:%M"), policy.quiet_end.strftime("%H:%M")
    return f"quiet hours {start}-{end} in {zone.key}"


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g}h"
