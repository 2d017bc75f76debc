"""Anti-harassment pacing: for one person and one candidate email, send now or when, and why.

Pure: plain data in, a `Decision` out, `now` passed in. Calendar rules (quiet hours,
weekdays, emails per local day) are read on the contact's own wall clock, so DST gaps
and repeats, half-hour zones and windows that wrap midnight fall out of one walk over
spans of constant UTC offset.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import repeat
from typing import NamedTuple, overload
from zoneinfo import ZoneInfo

from nurture.core.values import value
from nurture.core.words import counted

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK = timedelta(days=7)
MONTH = timedelta(days=30)
_DAY = timedelta(days=1)
_MAX_ROUNDS = 64
_SPAN = timedelta(days=3)


@value
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


@value
class Hold:
    """One rule that keeps the email from going now."""

    rule: str
    detail: str
    until: datetime | None


@value
class Decision:
    send_at: datetime | None
    holds: tuple[Hold, ...] = field(default=())

    @property
    def send_now(self) -> bool:
        return not self.holds and self.send_at is not None

    @property
    def reason(self) -> str:
        return "; ".join(hold.detail for hold in self.holds)


class Runs(Sequence[datetime]):
    """Instants in order, held as runs of one instant repeated: the sends of a whole sender
    (`global_sent`), where every email of a dispatch batch shares its batch's instant. It
    reads as the sorted list of every send (length, index, `bisect`) while it holds one
    entry per instant: building it from an hour of sends costs the batches of that hour,
    not their emails."""

    def __init__(self, runs: Iterable[tuple[datetime, int]] = ()) -> None:
        self._at: list[datetime] = []
        #: How many sends up to and including each run.
        self._ends: list[int] = []
        for instant, count in runs:
            self.add(instant, count)

    def add(self, instant: datetime, count: int = 1) -> None:
        """`count` more sends at `instant`, wherever it falls in the order."""
        if count <= 0:
            return
        index = bisect_left(self._at, instant)
        if index < len(self._at) and self._at[index] == instant:
            pass
        elif index == len(self._at):
            self._at.append(instant)
            self._ends.append(self._ends[-1] if self._ends else 0)
        else:
            self._at.insert(index, instant)
            self._ends.insert(index, self._ends[index - 1] if index else 0)
        for later in range(index, len(self._ends)):
            self._ends[later] += count

    def append(self, instant: datetime) -> None:
        self.add(instant)

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, index: int) -> datetime: ...

    @overload
    def __getitem__(self, index: slice) -> list[datetime]: ...

    def __getitem__(self, index: int | slice) -> datetime | list[datetime]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._at[bisect_right(self._ends, index)]

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same instants in the same order (a list of them)."""
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __iter__(self) -> Iterator[datetime]:
        start = 0
        for instant, end in zip(self._at, self._ends, strict=True):
            yield from repeat(instant, end - start)
            start = end


class _History(NamedTuple):
    """The sends one decision reads, and the local-day counts derived from them."""

    sent: Sequence[datetime]
    account: Sequence[datetime]
    everyone: Sequence[datetime]
    per_day: dict[date, int]
    account_per_day: dict[date, int]


class _Instant(NamedTuple):
    """A rule read on UTC instants (gaps, rolling windows): the earliest instant it allows."""

    name: str
    next_ok: Callable[[_History, datetime], datetime]
    describe: Callable[[datetime], str]


class _Calendar(NamedTuple):
    """A rule read on the contact's wall clock: whether a wall time is allowed, and when
    that can next change."""

    name: str
    ok: Callable[[_History, datetime], bool]
    next_change: Callable[[datetime], datetime]
    describe: Callable[[datetime], str]


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
            detail = f"sunset: {counted(unengaged, 'email')} in a row with no engagement"
            return Decision(None, (Hold("sunset", detail, None),))
    instants, calendar = _rules(policy, zone)
    history = _History(
        sent,
        account_sent,
        global_sent,
        _local_day_counts(sent, now, zone),
        _local_day_counts(account_sent, now, zone) if policy.account_per_day else {},
    )
    held: dict[str, str] = {}  # every reason why not now, in rule order
    candidate = now
    for rule in instants:
        allowed = rule.next_ok(history, now)
        if allowed > now:
            held[rule.name] = rule.describe(now)
            candidate = max(candidate, allowed)
    wall_now = _wall(now, zone)
    for cal in calendar:
        if not cal.ok(history, wall_now):
            held[cal.name] = cal.describe(now)
    if not held:
        return Decision(now)
    for _ in range(_MAX_ROUNDS):  # then the earliest instant every rule allows
        found = _walk(candidate, zone, calendar, history, held)
        if found is None:
            break
        candidate = found
        moved = False
        for rule in instants:
            allowed = rule.next_ok(history, candidate)
            if allowed > candidate:
                if rule.name not in held:
                    held[rule.name] = rule.describe(candidate)
                candidate = allowed
                moved = True
        if not moved:
            return Decision(candidate, _holds(held, candidate))
    return Decision(None, (*_holds(held, None), Hold("pacing", "no allowed instant", None)))


def _holds(held: dict[str, str], until: datetime | None) -> tuple[Hold, ...]:
    return tuple(Hold(name, detail, until) for name, detail in held.items())


@lru_cache(maxsize=1024)
def _rules(policy: Policy, zone: ZoneInfo) -> tuple[tuple[_Instant, ...], tuple[_Calendar, ...]]:
    """The rules a policy makes in a zone: built once, then read with each decision's history."""
    gap = policy.min_gap
    instants = [
        _Instant(
            "min_gap",
            lambda h, t: _after_gap(t, h.sent, gap),
            lambda t: f"minimum gap of {_hours(gap)} since the last email",
        ),
        _window("per_week", policy.per_week, WEEK, "emails in any 7 days", everyone=False),
    ]
    if policy.per_month is not None:
        instants.append(
            _window("per_month", policy.per_month, MONTH, "emails in any 30 days", everyone=False)
        )
    if policy.rate_per_minute is not None:
        instants.append(
            _window(
                "rate_per_minute",
                policy.rate_per_minute,
                timedelta(minutes=1),
                "emails a minute from this sender",
                everyone=True,
            )
        )
    if policy.rate_per_hour is not None:
        instants.append(
            _window(
                "rate_per_hour",
                policy.rate_per_hour,
                timedelta(hours=1),
                "emails an hour from this sender",
                everyone=True,
            )
        )
    day, plural = policy.per_day, "email" if policy.per_day == 1 else "emails"
    calendar = [
        _Calendar(
            "per_day",
            lambda h, w: h.per_day.get(w.date(), 0) < day,
            _next_midnight,
            lambda t: (
                f"cap of {day} {plural} a day reached for {_local(t, zone):%a %d %b} ({zone.key})"
            ),
        ),
    ]
    if policy.account_per_day is not None:
        limit = policy.account_per_day
        calendar.append(
            _Calendar(
                "account_per_day",
                lambda h, w: h.account_per_day.get(w.date(), 0) < limit,
                _next_midnight,
                lambda t: (
                    f"cap of {counted(limit, 'email')} a day to this account reached for "
                    f"{_local(t, zone):%a %d %b} ({zone.key})"
                ),
            )
        )
    calendar.append(
        _Calendar(
            "weekday",
            lambda h, w: w.weekday() in policy.weekdays,
            _next_midnight,
            lambda t: f"{_local(t, zone):%A} is not a sending day ({zone.key})",
        )
    )
    start, end = policy.quiet_start, policy.quiet_end
    if start is not None and end is not None:
        calendar.append(
            _Calendar(
                "quiet_hours",
                lambda h, w: not policy.is_quiet(w.time()),
                lambda w: _next_wall_time(w, end),
                lambda t: f"quiet hours {start:%H:%M}-{end:%H:%M} in {zone.key}",
            )
        )
    return tuple(instants), tuple(calendar)


def _window(name: str, limit: int, window: timedelta, words: str, *, everyone: bool) -> _Instant:
    """A rolling-window cap on this person's sends, or on the whole sender's."""
    field = "everyone" if everyone else "sent"
    return _Instant(
        name,
        lambda h, t: _after_window(t, getattr(h, field), limit, window),
        lambda t: f"cap of {limit} {words} reached",
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
        if _offset(b, zone) != offset:  # zones change offset at most once in a few days
            probe = a
            while _offset(probe + _DAY, zone) == offset:
                probe += _DAY
            b = _first_change(probe, probe + _DAY, offset, zone)
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
    rules: Sequence[_Calendar],
    history: _History,
    held: dict[str, str],
) -> datetime | None:
    """Earliest instant >= t whose local wall time every calendar rule allows.

    Where some rules refuse a wall time, nothing changes for them before the earliest of
    their `next_change` times, so the walk jumps there; each refusing rule joins `held`.
    """
    offset = _offset(t, zone)
    wall = (t + offset).replace(tzinfo=None)
    if all(rule.ok(history, wall) for rule in rules):
        return t
    horizon = t + timedelta(days=40)
    for a, b, offset in _spans(t, zone):
        if a > horizon:
            return None
        wall = (a + offset).replace(tzinfo=None)
        end = (b + offset).replace(tzinfo=None)
        while wall < end:
            refusing = [rule for rule in rules if not rule.ok(history, wall)]
            if not refusing:
                return (wall - offset).replace(tzinfo=UTC)
            for rule in refusing:
                if rule.name not in held:
                    held[rule.name] = rule.describe((wall - offset).replace(tzinfo=UTC))
            wall = min(rule.next_change(wall) for rule in refusing)
    return None  # pragma: no cover - _spans never ends


def _wall(t: datetime, zone: ZoneInfo) -> datetime:
    return (t + _offset(t, zone)).replace(tzinfo=None)


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
