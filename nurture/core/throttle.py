"""Pure: how long a dashboard login must wait after failed attempts.

The failures that count are those of the last day since the last successful login (for an
account: its own successes; for a client address: successes from it). From the `limit`-th
failure on, each further attempt waits `first_wait` doubled for every failure beyond the
limit (1, 2, 4, 8... minutes), `longest` at most, counted from the last failure. Attempts
refused while waiting are not checked, and not counted, so the wait grows only with
passwords really tried.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from nurture.core.values import value


@value
class Throttle:
    account_limit: int = 5
    address_limit: int = 20
    lookback: timedelta = timedelta(days=1)
    first_wait: timedelta = timedelta(minutes=1)
    longest: timedelta = timedelta(hours=1)

    def wait(self, failures: Sequence[datetime], limit: int, now: datetime) -> timedelta:
        """What is left to wait at `now` after `failures` (those that count), or zero."""
        over = len(failures) - limit
        if over < 0:
            return timedelta(0)
        delay = min(self.first_wait * 2 ** min(over, 30), self.longest)
        left: timedelta = max(failures) + delay - now
        return max(left, timedelta(0))

    def login_wait(
        self, account: Sequence[datetime], address: Sequence[datetime], now: datetime
    ) -> timedelta:
        """The longer of the account's and the address's waits."""
        return max(
            self.wait(account, self.account_limit, now),
            self.wait(address, self.address_limit, now),
        )


def in_words(wait: timedelta) -> str:
    """'45 seconds', '1 minute', '16 minutes' (rounded up)."""
    seconds = math.ceil(wait.total_seconds())
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
