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
from functools import partial
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK = timedelta(days=7)
MONTH = timedelta(days=30)
_DAY = timedelta(days=1)
_MAX_ROUNDS = 64
_SPAN = timedelta(days=7)


@dataclass(frozen=True)
class Policy:
    """The caps for one email. `None` switches an optional cap off."""

    per_day: int = 1
    per_week: int = 3
    min_gap: timedelta = timedelta(hours=20)
    quiet_start: time | None = time(20, 0)
    quiet_end: time | None = time(8, 0)
    weekdays: frozenset[int] = frozenset(range(5))
    per_month: int | None = None
    account_per_day: int | None = None
    sunset_after: int | None = None
    rate_per_minute: int | None = None
    rate_per_hour: int | None = None

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


_Rule = tuple[str, Callable[[datetime], datetime | None], Callable[[datetime], str]]


def decide(
    *,
    now: datetime,
    sent: Sequence[datetime],
    policy: Policy,
    zone: ZoneInfo,
    suppressed: str | None = None,
    last_engaged: datetime | None = None,
    account_sent: Sequence[datetime] = (),
    global_sent: Sequence[datetime] = (),
) -> Decision:
    """Send now, or the earliest instant the email may go with every rule that holds it.

    `sent` holds the UTC instants of this person's past marketing emails, oldest first;
    `account_sent` those of everyone in the person's account (the person included), and
    `global_sent` those of the whole sender, for the account cap and the send rate.
    `suppressed` is the reason the person may never be written to, if there is one;
    `last_engaged` is the person's last real engagement, for the sunset rule.
    A `send_at` of None means never: suppressed or sunset.
    """
    if suppressed:
        return Decision(None, (Hold("suppressed", suppressed, None),))
    if policy.sunset_after is not None:
        unengaged = len(sent) - (bisect_right(sent, last_engaged) if last_engaged else 0)
        if unengaged >= policy.sunset_after:
            detail = f"sunset: {unengaged} emails in a row with no engagement"
            return Decision(None, (Hold("sunset", detail, None),))
    rules = _rules(now, sent, policy, zone, account_sent, global_sent)
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


def _rules(
    now: datetime,
    sent: Sequence[datetime],
    policy: Policy,
    zone: ZoneInfo,
    account_sent: Sequence[datetime],
    global_sent: Sequence[datetime],
) -> list[_Rule]:
    """Each configured rule: its name, its earliest-allowed function, its words."""
    gap = policy.min_gap
    rules: list[_Rule] = [
        (
            "min_gap",
            lambda t: _after_gap(t, sent, gap),
            lambda t: f"minimum gap of {_hours(gap)} since the last email",
        ),
        (
            "per_week",
            lambda t: _after_window(t, sent, policy.per_week, WEEK),
            lambda t: f"cap of {policy.per_week} emails in any 7 days reached",
        ),
        _day_cap("per_day", sent, policy.per_day, now, zone, "a day"),
    ]
    if policy.per_month is not None:
        month = policy.per_month
        rules.append(
            (
                "per_month",
                lambda t: _after_window(t, sent, month, MONTH),
                lambda t: f"cap of {month} emails in any 30 days reached",
            )
        )
    if policy.account_per_day is not None:
        rules.append(
            _day_cap(
                "account_per_day",
                account_sent,
                policy.account_per_day,
                now,
                zone,
                "a day to this account",
            )
        )
    for name, limit, window, words in (
        ("rate_per_minute", policy.rate_per_minute, timedelta(minutes=1), "a minute"),
        ("rate_per_hour", policy.rate_per_hour, timedelta(hours=1), "an hour"),
    ):
        if limit is not None:
            rules.append(
                (
                    name,
                    partial(_after_window, times=global_sent, limit=limit, window=window),
                    partial(_rate_text, limit=limit, words=words),
                )
            )
    rules.append(
        (
            "weekday",
            lambda t: _walk(t, zone, lambda w: w.weekday() in policy.weekdays, _next_midnight),
            lambda t: f"{_local(t, zone).strftime('%A')} is not a sending day ({zone.key})",
        )
    )
    if policy.quiet_start is not None and policy.quiet_end is not None:
        end = policy.quiet_end
        window_text = f"{policy.quiet_start:%H:%M}-{end:%H:%M}"
        rules.append(
            (
                "quiet_hours",
                lambda t: _walk(
                    t,
                    zone,
                    lambda w: not policy.is_quiet(w.time()),
                    lambda w: _next_wall_time(w, end),
                ),
                lambda t: f"quiet hours {window_text} in {zone.key}",
            )
        )
    return rules


def _day_cap(
    name: str, times: Sequence[datetime], limit: int, now: datetime, zone: ZoneInfo, words: str
) -> _Rule:
    counts = _local_day_counts(times, now, zone)
    plural = "email" if limit == 1 else "emails"
    return (
        name,
        lambda t: _walk(t, zone, lambda w: counts.get(w.date(), 0) < limit, _next_midnight),
        lambda t: (
            f"cap of {limit} {plural} {words} reached for {_local(t, zone):%a %d %b} ({zone.key})"
        ),
    )


def _after_gap(t: datetime, sent: Sequence[datetime], gap: timedelta) -> datetime:
    index = bisect_right(sent, t)
    if index == 0:
        return t
    return max(t, sent[index - 1] + gap)


def _after_window(
    t: datetime, times: Sequence[datetime], limit: int, window: timedelta
) -> datetime:
    """Earliest instant >= t with fewer than `limit` of `times` in the `window` up to it."""
    hi = bisect_right(times, t)
    lo = bisect_right(times, t - window)
    excess = (hi - lo) - limit
    if excess < 0:
        return t
    return max(t, times[lo + excess] + window)


def _rate_text(t: datetime, *, limit: int, words: str) -> str:
    return f"sending rate of {limit} emails {words} reached"


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


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g}h"
