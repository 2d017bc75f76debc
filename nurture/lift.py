"""What a workflow changed: the people it emailed against its holdout group.

For a workflow with `holdout:`, per stage reached after entry (every stage above the first
nurtured one, in the project's order) and per window after entry (30, 60, 90 days, and to
date), the share of each group that reached the stage, the difference in points and its
95% confidence interval, the sample sizes, and a plain sentence.

Definitions (also in the README and on the dashboard):

- The groups are the workflow's enrollments entered since its first holdout entry (before
  it nobody was held out, so the earlier entrants would compare other times): those with
  status `holdout` against all the others (emailed or meant to be: intention to treat).
- *Reached a stage* means a move into it or any stage above it (disqualified is none).
  People who had already reached it at or before their entry are left out of that stage's
  counts (nothing they could still reach).
- Within N days: a move at most N days after entry, among the people who entered N days
  ago or more (everyone in the count had the whole window); *to date*: any time until now.
- The interval is Newcombe's hybrid score interval (his method 10: Wilson score intervals
  of each rate, combined), at 95%. It is computed when each group has at least
  `MIN_PEOPLE` people; below that: "not enough people yet".

The counts are SQL over `enrollments` and `stage_moves`; the arithmetic is pure. They read
every entrant, so the dashboard shows them from `report_cache` (`cached_lifts`), renewed by
the periodic reports job; `nurture lift` counts them when asked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, case, exists, func, select, true
from sqlalchemy.orm import Session, aliased

from nurture.config import DISQUALIFIED, FIRST_STAGE, Settings
from nurture.core.holdouts import HOLDOUT, format_share
from nurture.db import write_transaction
from nurture.models import Enrollment, ReportCache, StageMove

#: The windows after entry the lift is shown for (days); None: to date.
WINDOWS: tuple[int | None, ...] = (30, 60, 90, None)
#: People each group needs before an interval is shown.
MIN_PEOPLE = 30
CONFIDENCE = 0.95
METHOD = "Newcombe's hybrid score interval (Wilson score intervals combined), 95%"


@dataclass(frozen=True)
class Group:
    """People in the count, and those of them who reached the stage."""

    people: int
    reached: int

    @property
    def rate(self) -> float:
        return self.reached / self.people if self.people else 0.0


@dataclass(frozen=True)
class Row:
    stage: str
    window: int | None
    treated: Group
    holdout: Group
    #: The difference treated - holdout and its interval, in points (None: too few people).
    difference: float | None
    low: float | None
    high: float | None

    @property
    def when(self) -> str:
        return "to date" if self.window is None else f"within {self.window} days"

    @property
    def sentence(self) -> str:
        """ "+4.1 points of MQL rate, 95% CI +1.2 to +7.0, 2,310 vs 254 people"."""
        if self.difference is None or self.low is None or self.high is None:
            return (
                f"not enough people yet: {self.treated.people:,} vs {self.holdout.people:,} "
                f"people, {MIN_PEOPLE} per group needed"
            )
        return (
            f"{self.difference:+.1f} points of {stage_label(self.stage)} rate "
            f"({self.treated.rate:.1%} vs {self.holdout.rate:.1%}), "
            f"{CONFIDENCE:.0%} CI {self.low:+.1f} to {self.high:+.1f}, "
            f"{self.treated.people:,} vs {self.holdout.people:,} people"
        )


@dataclass(frozen=True)
class Lift:
    workflow: str
    share: float
    #: The first holdout entry (None: nobody held out yet, so no comparison).
    since: datetime | None
    treated: int
    held_out: int
    rows: tuple[Row, ...]

    @property
    def pending_windows(self) -> tuple[int, ...]:
        """The windows (days) nobody in either group has had whole yet: rows of 0 vs 0 people
        that say nothing, left out of the text and the page (kept in JSON)."""
        return tuple(
            w
            for w in WINDOWS
            if w is not None
            and not any(r.treated.people + r.holdout.people for r in self.rows if r.window == w)
        )

    @property
    def shown(self) -> tuple[Row, ...]:
        """The rows worth reading: every window but the pending ones."""
        pending = self.pending_windows
        return tuple(r for r in self.rows if r.window not in pending)

    @property
    def pending_sentence(self) -> str:
        """ "Within 60 and 90 days: nobody has been in it that long yet." or ""."""
        pending = self.pending_windows
        if not pending or self.since is None:
            return ""
        days = [str(w) for w in pending]
        listed = days[0] if len(days) == 1 else ", ".join(days[:-1]) + " and " + days[-1]
        return f"Within {listed} days: nobody has been in it that long yet."


def stage_label(stage: str) -> str:
    return stage.upper() if len(stage) <= 3 else stage


def wilson(reached: int, people: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    if people == 0:
        return 0.0, 1.0
    p = reached / people
    centre = p + z * z / (2 * people)
    spread = z * math.sqrt(p * (1 - p) / people + z * z / (4 * people * people))
    scale = 1 + z * z / people
    return (centre - spread) / scale, (centre + spread) / scale


def newcombe(a: Group, b: Group, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The difference a - b of two rates and Newcombe's hybrid score interval (1998, method
    10), as fractions."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p1, p2 = a.rate, b.rate
    l1, u1 = wilson(a.reached, a.people, z)
    l2, u2 = wilson(b.reached, b.people, z)
    d = p1 - p2
    return (
        d,
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def row(stage: str, window: int | None, treated: Group, holdout: Group) -> Row:
    if min(treated.people, holdout.people) < MIN_PEOPLE:
        return Row(stage, window, treated, holdout, None, None, None)
    d, low, high = newcombe(treated, holdout)
    return Row(stage, window, treated, holdout, 100 * d, 100 * low, 100 * high)


def reached_stages(settings: Settings) -> list[str]:
    """The stages a lift is shown for: every one above the first nurtured stage."""
    order = [s.name for s in settings.stages if s.name not in (FIRST_STAGE, DISQUALIFIED)]
    nurtured = [s.name for s in settings.stages if s.phase is not None]
    if not nurtured:
        return []
    return order[order.index(nurtured[0]) + 1 :]


def _within(
    later: ColumnElement[datetime],
    earlier: ColumnElement[datetime],
    days: int,
    dialect: str,
) -> ColumnElement[bool]:
    """`later` at most `days` days after `earlier`, in the database's own date arithmetic."""
    if dialect == "sqlite":  # UTCDateTime stores naive UTC text there
        return func.julianday(later) <= func.julianday(earlier) + days
    return later <= earlier + func.make_interval(0, 0, 0, days)


def lift(session: Session, settings: Settings, workflow: str, share: float, now: datetime) -> Lift:
    """The lift of `workflow` as of `now` (see the module's definitions)."""
    since = session.scalar(
        select(func.min(Enrollment.entered_at)).where(
            Enrollment.workflow == workflow, Enrollment.status == HOLDOUT
        )
    )
    groups = {True: 0, False: 0}
    rows: list[Row] = []
    if since is not None:
        held = Enrollment.status == HOLDOUT
        base = and_(Enrollment.workflow == workflow, Enrollment.entered_at >= since)
        for is_held, count in session.execute(
            select(held, func.count()).where(base).group_by(held)
        ):
            groups[bool(is_held)] = count
        order = reached_stages(settings)
        dialect = session.get_bind().dialect.name
        for index, stage in enumerate(order):
            counts = _counts(session, base, order[index:], now, dialect)
            rows.extend(row(stage, w, counts[False][w], counts[True][w]) for w in WINDOWS)
    return Lift(workflow, share, since, groups[False], groups[True], tuple(rows))


def _counts(
    session: Session,
    base: ColumnElement[bool],
    above: Sequence[str],
    now: datetime,
    dialect: str,
) -> dict[bool, dict[int | None, Group]]:
    """Per group (held out or not) and per window: the people in the count, and those who
    reached one of the stages `above`. One query: each entrant's first move into them after
    entering (a move within the window exists exactly when the first one is within it)."""
    before = aliased(StageMove)
    after = aliased(StageMove)
    first = (
        select(func.min(after.at))
        .where(
            after.contact_id == Enrollment.contact_id,
            after.to_stage.in_(above),
            after.at > Enrollment.entered_at,
            after.at <= now,
        )
        .correlate(Enrollment)
        .scalar_subquery()
    )
    entrants = (
        select(
            (Enrollment.status == HOLDOUT).label("held"),
            Enrollment.entered_at.label("entered_at"),
            first.label("first_at"),
        )
        .where(
            base,
            ~exists().where(
                before.contact_id == Enrollment.contact_id,
                before.to_stage.in_(above),
                before.at <= Enrollment.entered_at,
            ),
        )
        .subquery()
    )
    columns = []
    for window in WINDOWS:
        counted: ColumnElement[bool] = (
            true() if window is None else entrants.c.entered_at <= now - timedelta(days=window)
        )
        hit: ColumnElement[bool] = entrants.c.first_at.is_not(None)
        if window is not None:
            hit = and_(hit, _within(entrants.c.first_at, entrants.c.entered_at, window, dialect))
        columns += [
            func.coalesce(func.sum(case((counted, 1), else_=0)), 0),
            func.coalesce(func.sum(case((and_(counted, hit), 1), else_=0)), 0),
        ]
    out = {held: {w: Group(0, 0) for w in WINDOWS} for held in (True, False)}
    for held, *numbers in session.execute(
        select(entrants.c.held, *columns).group_by(entrants.c.held)
    ):
        out[bool(held)] = {
            w: Group(int(numbers[2 * n]), int(numbers[2 * n + 1])) for n, w in enumerate(WINDOWS)
        }
    return out


def heading(result: Lift) -> str:
    """One line: the holdout share and the groups, or why there is nothing to compare."""
    share = format_share(result.share)
    if result.since is None:
        if result.share == 0:
            return (
                f"{result.workflow}: no holdout group (give the workflow `holdout: 10%` to "
                "measure what it changes)"
            )
        return f"{result.workflow}: holdout {share}, nobody held out yet"
    return (
        f"{result.workflow}: holdout {share}; entrants since {result.since:%Y-%m-%d %H:%M} UTC "
        f"(the first held out): {result.treated:,} emailed, {result.held_out:,} held out"
    )


def as_dict(result: Lift) -> dict[str, Any]:
    return {
        "workflow": result.workflow,
        "holdout": format_share(result.share),
        "since": None if result.since is None else result.since.isoformat(),
        "treated": result.treated,
        "held_out": result.held_out,
        "method": METHOD,
        "min_people": MIN_PEOPLE,
        "rows": [
            {
                "stage": r.stage,
                "window_days": r.window,
                "treated": {"people": r.treated.people, "reached": r.treated.reached},
                "holdout": {"people": r.holdout.people, "reached": r.holdout.reached},
                "difference_points": r.difference,
                "ci_low_points": r.low,
                "ci_high_points": r.high,
                "sentence": r.sentence,
            }
            for r in result.rows
        ],
    }


#: The report_cache row of every workflow's lift (for the dashboard).
CACHE = "lift"
CACHE_VERSION = 1
#: How old the kept lifts may be before a page view counts them again.
MAX_AGE = timedelta(minutes=15)


def from_dict(data: dict[str, Any], share: float) -> Lift:
    """A Lift back from `as_dict`."""

    def group(found: dict[str, int]) -> Group:
        return Group(int(found["people"]), int(found["reached"]))

    since = data["since"]
    return Lift(
        data["workflow"],
        share,
        None if since is None else datetime.fromisoformat(since),
        int(data["treated"]),
        int(data["held_out"]),
        tuple(
            Row(
                r["stage"],
                r["window_days"],
                group(r["treated"]),
                group(r["holdout"]),
                r["difference_points"],
                r["ci_low_points"],
                r["ci_high_points"],
            )
            for r in data["rows"]
        ),
    )


def _key(settings: Settings, holdouts: dict[str, float]) -> dict[str, Any]:
    """What the kept lifts were counted for: the workflows' shares and the stages."""
    return {"holdouts": holdouts, "stages": reached_stages(settings)}


def cached_lifts(
    database: Engine, settings: Settings, holdouts: dict[str, float], now: datetime
) -> dict[str, Lift]:
    """Each workflow's lift (`holdouts`: workflow -> its holdout share) from `report_cache`,
    counted again (and kept) when missing, older than MAX_AGE or counted for other
    workflows, shares or stages."""
    with database.connect() as connection:
        found = connection.execute(
            select(ReportCache.computed_at, ReportCache.data).where(ReportCache.name == CACHE)
        ).first()
    if (
        found is not None
        and now - MAX_AGE < found.computed_at <= now
        and found.data.get("version") == CACHE_VERSION
        and found.data.get("key") == _key(settings, holdouts)
    ):
        return {w: from_dict(d, holdouts[w]) for w, d in found.data["lifts"].items()}
    return refresh_lifts(database, settings, holdouts, now)


def refresh_lifts(
    database: Engine, settings: Settings, holdouts: dict[str, float], now: datetime
) -> dict[str, Lift]:
    """Count every workflow's lift and keep it in `report_cache`."""
    with Session(database) as session:
        lifts = {w: lift(session, settings, w, share, now) for w, share in holdouts.items()}
    data = {
        "version": CACHE_VERSION,
        "key": _key(settings, holdouts),
        "lifts": {w: as_dict(found) for w, found in lifts.items()},
    }
    with write_transaction(database) as session:
        session.merge(ReportCache(name=CACHE, computed_at=now, data=data))
    return lifts


def holdouts(workflows: Any) -> dict[str, float]:
    """Workflow id -> its holdout share, for `cached_lifts`."""
    return {id: float(workflow.holdout) for id, workflow in workflows.items()}
