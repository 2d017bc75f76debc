"""Pacing decisions per second, for people with 50 past emails each.

    python bench/pacing.py [--people 20000]

Each decision is the pure `decide` of nurture/core/pacing.py with the example project's caps
(day, week, 30-day, account, quiet hours, weekdays, sunset), a person in one of several
zones (DST and half-hour ones included), 50 past emails over the last months, and a `now`
spread over a fortnight so quiet hours, weekends and caps all come into play.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nurture.core.pacing import decide  # noqa: E402
from nurture.project import load_project  # noqa: E402

ZONES = [
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Adelaide",
    "America/St_Johns",
    "Asia/Tokyo",
    "UTC",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    policy = load_project(REPO).settings.caps.policy()
    rng = random.Random(args.seed)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    cases = []
    for _ in range(args.people):
        now = start + timedelta(minutes=rng.randrange(14 * 24 * 60))
        sent = sorted(now - timedelta(minutes=rng.randrange(1, 200 * 24 * 60)) for _ in range(50))
        account = sorted(
            [*sent[-5:], *(now - timedelta(hours=rng.randrange(1, 40)) for _ in range(3))]
        )
        cases.append((now, sent, ZoneInfo(rng.choice(ZONES)), account, sent[-rng.randrange(1, 8)]))
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    for now, sent, zone, account, engaged in cases:
        decision = decide(
            now=now, sent=sent, policy=policy, zone=zone, account_sent=account, last_engaged=engaged
        )
        outcomes["send now" if decision.send_now else (decision.holds[0].rule)] += 1
    elapsed = time.perf_counter() - started
    print(f"decisions:          {args.people} (50 past emails each)")
    print(f"rate:               {args.people / elapsed:,.0f} decisions/s on one core")
    print(f"per decision:       {elapsed / args.people * 1e6:.1f} µs")
    print("outcomes:           " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))


if __name__ == "__main__":
    main()
