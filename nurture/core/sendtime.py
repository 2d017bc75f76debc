"""Send-time optimization (`send_time: best`): each email at the local hour the person engages.

Pure: engagement instants in, an hour and a time out, `now` passed in. A person's hour is
the local hour (in their zone) of their real opens and clicks (machine ones never reach
here), each weighed by its age with a half-life of `HALF_LIFE`; people without any take the
project's best hour, tallied the same way over everyone's real engagement, and, in a project
with none yet, `DEFAULT_HOUR`. Only hours outside the quiet hours are chosen. The email then
goes at the earliest instant of that hour the caps allow (weekdays, quiet hours, every cap),
and never later than `MAX_DELAY` after it was due (the instant the caps alone would let it
go): when no such instant comes by then, it goes as the caps say. An email is held for its
hour once: when that hold runs out, it goes as the caps say.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from nurture.core.pacing import Decision, Hold, Policy
from nurture.core.values import value

#: A real open or click loses half its weight every 30 days.
HALF_LIFE = timedelta(days=30)
#: Engagement older than this is not read (it would weigh less than 1/64).
LOOKBACK = timedelta(days=180)
#: The hour (local) when neither the person nor anyone in the project has engaged yet.
DEFAULT_HOUR = 10
#: send_time never holds an email longer than this after it was due.
MAX_DELAY = timedelta(hours=24)
#: The events that are engagement here (a machine's never count).
ENGAGED = ("email_opened", "email_clicked")
#: The deferral rule of a send_time hold.
RULE = "send_time"
#: How a send_time hold's reason starts (the engine finds a hold that ran out by it).
MARK = "send time: "


@value
class Hours:
    """Real engagement per local hour (index 0-23), weighed by age; `events` counted."""

    weights: tuple[float, ...] = (0.0,) * 24
    events: int = 0


@value
class Choice:
    """The hour an email should go at, and why, in words."""

    hour: int
    why: str


def weight(age: timedelta) -> float:
    """How much one engagement of this age counts (1 when it just happened)."""
    return float(0.5 ** (max(age, timedelta(0)) / HALF_LIFE))


def tally(engaged: Iterable[tuple[datetime, ZoneInfo, int]], now: datetime) -> Hours:
    """Weighted engagement per local hour from (UTC instant, the person's zone, how many)."""
    weights = [0.0] * 24
    events = 0
    for at, zone, count in engaged:
        if now - at > LOOKBACK:
            continue
        weights[at.astimezone(zone).hour] += count * weight(now - at)
        events += count
    return Hours(tuple(weights), events)


@lru_cache(maxsize=256)
def open_hours(policy: Policy) -> tuple[int, ...]:
    """The local hours with at least one minute outside the quiet hours."""
    end = policy.quiet_end
    found = tuple(
        h
        for h in range(24)
        if not policy.is_quiet(time(h)) or (end is not None and end.hour == h and end.minute)
    )
    return found or tuple(range(24))


def choose(person: Hours, project: Hours, policy: Policy, zone: ZoneInfo) -> Choice:
    """The person's best hour outside the quiet hours: their own, else the project's, else
    `DEFAULT_HOUR` (the nearest open hour to it)."""
    allowed = open_hours(policy)
    if person.events:
        hour, note = _best(person, allowed)
        return Choice(hour, f"best hour {hour:02d}:00 {zone.key}{note} from {_count(person)}")
    if project.events:
        hour, note = _best(project, allowed)
        return Choice(
            hour,
            f"project's best hour {hour:02d}:00 {zone.key}{note} (no real opens/clicks of "
            f"their own; {_count(project)} in the project)",
        )
    hour = _nearest(DEFAULT_HOUR, allowed)
    return Choice(
        hour, f"default hour {hour:02d}:00 {zone.key} (no real opens/clicks in the project yet)"
    )


def _best(hours: Hours, allowed: Sequence[int]) -> tuple[int, str]:
    """The allowed hour of most weight (the earliest on a tie); when all of it falls in
    quiet hours, the allowed hour nearest to its peak."""
    best = max(allowed, key=lambda h: (hours.weights[h], -h))
    if hours.weights[best] > 0:
        return best, ""
    peak = max(range(24), key=lambda h: (hours.weights[h], -h))
    hour = _nearest(peak, allowed)
    return hour, f" (nearest outside quiet hours to {peak:02d}:00)"


def _nearest(target: int, allowed: Sequence[int]) -> int:
    return min(allowed, key=lambda h: (min((h - target) % 24, (target - h) % 24), h))


def _count(hours: Hours) -> str:
    return f"{hours.events} real open{'' if hours.events == 1 else 's'}/clicks"


def place(
    decision: Decision,
    *,
    choice: Choice,
    zone: ZoneInfo,
    caps_at: Callable[[datetime], Decision],
) -> Decision:
    """The caps' `decision` moved to the earliest instant of the chosen local hour that the
    caps allow (`caps_at(t)`: the caps' decision at `t`), no later than `MAX_DELAY` after
    the caps' own instant; unchanged when there is none by then."""
    if decision.send_at is None:
        return decision
    latest = decision.send_at + MAX_DELAY
    t = decision.send_at
    while t <= latest:
        if t.astimezone(zone).hour == choice.hour:
            if t == decision.send_at:
                return decision
            holds = tuple(Hold(h.rule, h.detail, t) for h in decision.holds)
            return Decision(t, (*holds, Hold(RULE, MARK + choice.why, t)))
        start = _next_start(t, choice.hour, zone)
        if start > latest:
            break
        found = caps_at(start).send_at
        if found is None:
            break
        t = found
    return decision


def _next_start(t: datetime, hour: int, zone: ZoneInfo) -> datetime:
    """The earliest instant after `t` whose local hour is `hour` (both readings of a repeated
    hour; a skipped one is passed over)."""
    local = t.astimezone(zone).date()
    candidates = []
    for days in range(-1, 4):
        for fold in (0, 1):
            wall = datetime.combine(local + timedelta(days=days), time(hour), zone).replace(
                fold=fold
            )
            instant = wall.astimezone(UTC)
            if instant > t and instant.astimezone(zone).hour == hour:
                candidates.append(instant)
    return min(candidates, default=t + 4 * MAX_DELAY)  # an hour a zone skipped for days
