"""Pacing: exact in every time zone, checked against a brute-force oracle that scans minutes."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nurture.core.pacing import WEEK, Decision, Policy, Runs, decide
from nurture.core.sendtime import MAX_DELAY, Choice, place

PARIS = ZoneInfo("Europe/Paris")
EVERY_DAY = frozenset(range(7))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def allowed(
    t: datetime,
    sent: list[datetime],
    policy: Policy,
    zone: ZoneInfo,
    account: list[datetime] = [],  # noqa: B006 - read only
    everyone: list[datetime] = [],  # noqa: B006 - read only
) -> bool:
    """The rules, read literally, at one instant."""
    local = t.astimezone(zone)
    if policy.is_quiet(local.time()) or local.weekday() not in policy.weekdays:
        return False
    past = [s for s in sent if s <= t]

    def same_day(times: list[datetime]) -> int:
        return sum(1 for s in times if s <= t and s.astimezone(zone).date() == local.date())

    def within(times: list[datetime], window: timedelta) -> int:
        return sum(1 for s in times if t - window < s <= t)

    if same_day(sent) >= policy.per_day or within(sent, WEEK) >= policy.per_week:
        return False
    if policy.per_month is not None and within(sent, timedelta(days=30)) >= policy.per_month:
        return False
    if policy.account_per_day is not None and same_day(account) >= policy.account_per_day:
        return False
    if (
        policy.rate_per_minute is not None
        and within(everyone, timedelta(minutes=1)) >= policy.rate_per_minute
    ):
        return False
    if (
        policy.rate_per_hour is not None
        and within(everyone, timedelta(hours=1)) >= policy.rate_per_hour
    ):
        return False
    return not (past and t - past[-1] < policy.min_gap)


def oracle(
    now: datetime,
    sent: list[datetime],
    policy: Policy,
    zone: ZoneInfo,
    account: list[datetime] = [],  # noqa: B006 - read only
    everyone: list[datetime] = [],  # noqa: B006 - read only
) -> datetime | None:
    t = now
    for _ in range(60 * 24 * 40):
        if allowed(t, sent, policy, zone, account, everyone):
            return t
        t += timedelta(minutes=1)
    return None


def test_sends_now_when_nothing_holds() -> None:
    decision = decide(now=utc(2026, 3, 2, 9), sent=[], policy=Policy(), zone=PARIS)
    assert decision.send_now and decision.send_at == utc(2026, 3, 2, 9) and decision.holds == ()


def test_suppression_is_absolute() -> None:
    decision = decide(
        now=utc(2026, 3, 2, 9), sent=[], policy=Policy(), zone=PARIS, suppressed="unsubscribed"
    )
    assert decision.send_at is None and decision.holds[0].rule == "suppressed"


def test_quiet_hours_in_the_contacts_zone_not_the_servers() -> None:
    # 07:30 in Kolkata (UTC+05:30) is inside 20:00-08:00: wait until 08:00 local = 02:30 UTC.
    decision = decide(
        now=utc(2026, 3, 3, 2, 0), sent=[], policy=Policy(), zone=ZoneInfo("Asia/Kolkata")
    )
    assert decision.send_at == utc(2026, 3, 3, 2, 30)
    assert [h.rule for h in decision.holds] == ["quiet_hours"]
    assert "quiet hours 20:00-08:00 in Asia/Kolkata" in decision.reason


def test_weekend_and_quiet_hours_together() -> None:
    # Saturday 23:00 in Paris: Monday 08:00 local is the first allowed instant.
    decision = decide(now=utc(2026, 11, 21, 22), sent=[], policy=Policy(), zone=PARIS)
    assert decision.send_at == utc(2026, 11, 23, 7)
    assert {h.rule for h in decision.holds} == {"weekday", "quiet_hours"}


def test_spring_forward_gap() -> None:
    # Paris skips 02:00-03:00 on 29 March 2026; a window ending 02:30 ends at 03:00 CEST.
    policy = Policy(
        quiet_start=time(1, 0), quiet_end=time(2, 30), weekdays=EVERY_DAY, min_gap=timedelta(0)
    )
    decision = decide(now=utc(2026, 3, 29, 0, 30), sent=[], policy=policy, zone=PARIS)
    assert decision.send_at == utc(2026, 3, 29, 1, 0)
    assert decision.send_at.astimezone(PARIS).hour == 3


def test_autumn_repeat_hour_counts_one_local_day() -> None:
    # Paris repeats 02:00-03:00 on 25 October 2026: both passes are the same local day.
    policy = Policy(
        per_day=1,
        per_week=5,
        min_gap=timedelta(0),
        quiet_start=None,
        quiet_end=None,
        weekdays=EVERY_DAY,
    )
    first_pass = utc(2026, 10, 25, 0, 30)  # 02:30 CEST
    second_pass = utc(2026, 10, 25, 1, 30)  # 02:30 CET
    decision = decide(now=second_pass, sent=[first_pass], policy=policy, zone=PARIS)
    assert decision.send_at == utc(2026, 10, 25, 23, 0)  # midnight local, 26 October
    assert decision.holds[0].rule == "per_day"


def test_local_day_boundary_not_utc() -> None:
    # Los Angeles: a send Monday 23:00 local; Tuesday 00:30 local is a new day there.
    zone = ZoneInfo("America/Los_Angeles")
    policy = Policy(min_gap=timedelta(0), quiet_start=None, quiet_end=None, weekdays=EVERY_DAY)
    sent = [datetime(2026, 6, 1, 23, 0, tzinfo=zone).astimezone(UTC)]
    now = datetime(2026, 6, 2, 0, 30, tzinfo=zone).astimezone(UTC)
    assert decide(now=now, sent=sent, policy=policy, zone=zone).send_now


def test_rolling_week_releases_when_the_oldest_leaves() -> None:
    policy = Policy(
        per_day=1,
        per_week=2,
        min_gap=timedelta(0),
        quiet_start=None,
        quiet_end=None,
        weekdays=EVERY_DAY,
    )
    sent = [utc(2026, 3, 2, 10), utc(2026, 3, 4, 10)]
    decision = decide(now=utc(2026, 3, 6, 10), sent=sent, policy=policy, zone=PARIS)
    assert decision.send_at == utc(2026, 3, 9, 10)
    assert decision.holds[0].rule == "per_week"


def test_minimum_gap() -> None:
    policy = Policy(
        min_gap=timedelta(hours=20),
        quiet_start=None,
        quiet_end=None,
        weekdays=EVERY_DAY,
        per_day=3,
        per_week=10,
    )
    decision = decide(now=utc(2026, 3, 2, 12), sent=[utc(2026, 3, 2, 9)], policy=policy, zone=PARIS)
    assert decision.send_at == utc(2026, 3, 3, 5)
    assert decision.holds[0].rule == "min_gap"


def test_window_that_wraps_midnight() -> None:
    policy = Policy(quiet_start=time(22, 0), quiet_end=time(6, 0), weekdays=EVERY_DAY)
    assert policy.is_quiet(time(23, 0)) and policy.is_quiet(time(3, 0))
    assert not policy.is_quiet(time(6, 0)) and not policy.is_quiet(time(21, 59))


ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Australia/Adelaide",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
    "Asia/Tokyo",
    "Pacific/Apia",
]
# Instants near DST changes of several of these zones, so the search lands on the edges.
EDGES = [
    utc(2026, 3, 29, 1),
    utc(2026, 10, 25, 1),
    utc(2026, 3, 8, 7),
    utc(2026, 11, 1, 6),
    utc(2026, 4, 4, 15, 30),
    utc(2026, 10, 3, 16, 30),
    utc(2026, 9, 6, 4),
    utc(2026, 4, 5, 3),
    utc(2026, 3, 8, 5, 30),
    utc(2026, 11, 1, 3, 30),
    utc(2026, 6, 15, 12),
]


Case = tuple[datetime, list[datetime], Policy, ZoneInfo, list[datetime], list[datetime]]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    zone = ZoneInfo(draw(st.sampled_from(ZONES)))
    base = draw(st.sampled_from(EDGES))
    now = base + timedelta(minutes=draw(st.integers(-3 * 1440, 3 * 1440)))
    offsets = draw(st.lists(st.integers(0, 32 * 1440), max_size=14))
    sent = sorted(now - timedelta(minutes=m) for m in offsets)
    per_day = draw(st.integers(1, 3))
    per_week = draw(st.integers(per_day, 7))
    gap = timedelta(minutes=draw(st.sampled_from([0, 30, 60 * 4, 60 * 20, 60 * 36])))
    quiet = draw(
        st.none()
        | st.tuples(st.integers(0, 1439), st.integers(0, 1439)).filter(lambda q: q[0] != q[1])
    )
    weekdays = frozenset(draw(st.sets(st.integers(0, 6), min_size=1)))
    start, end = (time(q // 60, q % 60) for q in quiet) if quiet else (None, None)
    per_month = draw(st.none() | st.integers(per_week, 12))
    account_per_day = draw(st.none() | st.integers(1, 4))
    rate_per_minute = draw(st.none() | st.integers(1, 5))
    rate_per_hour = draw(st.none() | st.integers(1, 40))
    others = draw(st.lists(st.integers(0, 3 * 1440), max_size=8))
    account = sorted([*sent, *(now - timedelta(minutes=m) for m in others)])
    recent = draw(st.lists(st.integers(0, 90), max_size=30))
    everyone = sorted([*sent, *(now - timedelta(minutes=m) for m in recent)])
    policy = Policy(
        per_day=per_day,
        per_week=per_week,
        min_gap=gap,
        quiet_start=start,
        quiet_end=end,
        weekdays=weekdays,
        per_month=per_month,
        account_per_day=account_per_day,
        rate_per_minute=rate_per_minute,
        rate_per_hour=rate_per_hour,
    )
    return now, sent, policy, zone, account, everyone


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_decision_is_the_earliest_allowed_instant(case: Case) -> None:
    now, sent, policy, zone, account, everyone = case
    decision: Decision = decide(
        now=now, sent=sent, policy=policy, zone=zone, account_sent=account, global_sent=everyone
    )
    expected = oracle(now, sent, policy, zone, account, everyone)
    assert decision.send_at == expected
    assert decision.send_now == (expected == now)
    if decision.send_at is not None:
        assert allowed(decision.send_at, sent, policy, zone, account, everyone)
    if not decision.send_now:
        assert decision.holds and all(h.detail for h in decision.holds)


def oracle_at_hour(
    now: datetime,
    hour: int,
    sent: list[datetime],
    policy: Policy,
    zone: ZoneInfo,
    account: list[datetime],
    everyone: list[datetime],
) -> datetime | None:
    """send_time read literally: the first allowed minute of the local `hour`, no later than
    24 h after the instant the caps alone allow; else that instant."""
    caps = oracle(now, sent, policy, zone, account, everyone)
    if caps is None:
        return None
    t = caps
    while t <= caps + timedelta(hours=24):
        if t.astimezone(zone).hour == hour and allowed(t, sent, policy, zone, account, everyone):
            return t
        t += timedelta(minutes=1)
    return caps


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.integers(0, 23))
def test_send_time_is_the_earliest_allowed_instant_of_the_hour(case: Case, hour: int) -> None:
    now, sent, policy, zone, account, everyone = case

    def caps_at(t: datetime) -> Decision:
        return decide(
            now=t, sent=sent, policy=policy, zone=zone, account_sent=account, global_sent=everyone
        )

    caps = caps_at(now)
    decision = place(caps, choice=Choice(hour, "best hour"), zone=zone, caps_at=caps_at)
    assert decision.send_at == oracle_at_hour(now, hour, sent, policy, zone, account, everyone)
    if decision.send_at is None:
        return
    assert caps.send_at is not None
    # never inside quiet hours, on a day off or over a cap; never more than 24 h late
    assert allowed(decision.send_at, sent, policy, zone, account, everyone)
    assert caps.send_at <= decision.send_at <= caps.send_at + MAX_DELAY
    if decision.send_at != caps.send_at:
        assert decision.send_at.astimezone(zone).hour == hour
        assert decision.holds[-1].rule == "send_time" and not decision.send_now
        assert all(h.until == decision.send_at for h in decision.holds)


@settings(max_examples=200, deadline=None)
@given(cases(), st.sampled_from(["unsubscribed", "hard_bounced", "complained", "do_not_contact"]))
def test_never_a_send_to_a_suppressed_person(case: Case, reason: str) -> None:
    now, sent, policy, zone, _, _ = case
    decision = decide(now=now, sent=sent, policy=policy, zone=zone, suppressed=reason)
    assert decision.send_at is None and not decision.send_now
    assert decision.holds[0].rule == "suppressed"


@settings(max_examples=200, deadline=None)
@given(cases(), st.integers(1, 6), st.none() | st.integers(0, 20))
def test_sunset_after_n_emails_without_engagement(
    case: Case, sunset: int, engaged_before: int | None
) -> None:
    now, sent, policy, zone, _, _ = case
    policy = replace(policy, sunset_after=sunset)
    last_engaged = (
        sent[-engaged_before - 1]
        if engaged_before is not None and engaged_before < len(sent)
        else None
    )
    unengaged = len([s for s in sent if last_engaged is None or s > last_engaged])
    decision = decide(now=now, sent=sent, policy=policy, zone=zone, last_engaged=last_engaged)
    if unengaged >= sunset:
        assert decision.send_at is None and decision.holds[0].rule == "sunset"
    else:
        assert decision.send_at is not None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 4)), max_size=30),
    st.lists(st.integers(-2, 42), max_size=10),
)
def test_runs_read_as_the_sorted_list_of_every_send(
    added: list[tuple[int, int]], probes: list[int]
) -> None:
    """The sender's sends kept as runs (an instant and how many) read as the sorted list
    of them all, whatever order the instants come in: length, items, bisection, slices."""
    runs, listed = Runs(), []
    for minute, count in added:
        runs.add(utc(2026, 3, 2, 8) + timedelta(minutes=minute), count)
        listed = sorted([*listed, *[utc(2026, 3, 2, 8) + timedelta(minutes=minute)] * count])
    runs.append(utc(2026, 3, 2, 8, 20))
    listed = sorted([*listed, utc(2026, 3, 2, 8, 20)])
    assert len(runs) == len(listed) and list(runs) == listed and runs == listed
    assert [runs[i] for i in range(-len(listed), len(listed))] == listed + listed
    assert runs[1:-1] == listed[1:-1]
    for minute in probes:
        at = utc(2026, 3, 2, 8) + timedelta(minutes=minute)
        assert bisect_left(runs, at) == bisect_left(listed, at)
        assert bisect_right(runs, at) == bisect_right(listed, at)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_a_decision_reads_the_senders_runs_as_their_list(case: Case) -> None:
    now, sent, policy, zone, account, everyone = case
    runs = Runs()
    for at in reversed(everyone):
        runs.append(at)
    assert decide(
        now=now, sent=sent, policy=policy, zone=zone, account_sent=account, global_sent=runs
    ) == decide(
        now=now, sent=sent, policy=policy, zone=zone, account_sent=account, global_sent=everyone
    )
