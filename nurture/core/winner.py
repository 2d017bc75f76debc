"""Which subject line of a test wins, and only when the numbers say so. Pure: no I/O.

The rule (also on the Content page and in the README): each subject line is judged by its
real clicks per email sent (people, not scanners; opens are left out because Apple Mail
Privacy Protection and image proxies open on the reader's behalf). A subject wins when

1. every subject has at least `MIN_SENDS` emails sent, and
2. the pooled two-proportion z-test's conditions hold for every pair (at least 5 expected
   clicks and 5 expected non-clicks in each subject, so the normal approximation is fair),
3. its click rate is the highest and differs from every other subject's with a two-sided
   p-value under 5 % divided by the number of comparisons (Bonferroni: with three subjects,
   each of the two comparisons must pass at 2.5 %), i.e. 95 % confidence overall.

Until then the page says which condition is missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from nurture.core.values import value

#: Emails a subject line must have been sent to before any winner is called.
MIN_SENDS = 100
#: Confidence asked of the whole test (family-wise, across all comparisons).
CONFIDENCE = 0.95
#: Expected clicks (and non-clicks) per subject the normal approximation needs.
MIN_EXPECTED = 5.0


@value
class Arm:
    """One subject line's numbers: emails sent, and those with a real click."""

    sent: int
    clicked: int

    @property
    def rate(self) -> float:
        return self.clicked / self.sent if self.sent else 0.0


@value
class Verdict:
    """`winner` is the index of the winning subject, or None; `reason` says why in a
    sentence a marketer can read; `p_values` holds the leader against each other subject."""

    winner: int | None
    reason: str
    p_values: tuple[float, ...] = ()


def two_proportion_p(a: Arm, b: Arm) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (1.0 when nothing differs)."""
    pooled = (a.clicked + b.clicked) / (a.sent + b.sent)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / a.sent + 1 / b.sent))
    if spread == 0:
        return 1.0
    z = (a.rate - b.rate) / spread
    return 2 * (1 - NormalDist().cdf(abs(z)))


def decide(
    arms: Sequence[Arm],
    *,
    min_sends: int = MIN_SENDS,
    confidence: float = CONFIDENCE,
) -> Verdict:
    """The winning subject of a test, or why there is none yet (see the module's rule)."""
    if len(arms) < 2:
        return Verdict(None, "no test: one subject line")
    short = [index for index, arm in enumerate(arms) if arm.sent < min_sends]
    if short:
        named = ", ".join(f"#{i + 1} ({arms[i].sent})" for i in short)
        return Verdict(None, f"not enough sends yet: {min_sends} per subject needed, {named}")
    leader = max(range(len(arms)), key=lambda i: (arms[i].rate, -i))
    others = [i for i in range(len(arms)) if i != leader]
    for i in others:
        pair = (arms[leader], arms[i])
        pooled = (pair[0].clicked + pair[1].clicked) / (pair[0].sent + pair[1].sent)
        expected = min(min(arm.sent * pooled, arm.sent * (1 - pooled)) for arm in pair)
        if expected < MIN_EXPECTED:
            return Verdict(
                None,
                f"too few clicks to compare #{leader + 1} and #{i + 1} yet "
                f"(at least {MIN_EXPECTED:g} expected clicks per subject needed)",
            )
    alpha = (1 - confidence) / len(others)
    p_values = tuple(two_proportion_p(arms[leader], arms[i]) for i in others)
    if all(p < alpha for p in p_values):
        return Verdict(
            leader,
            f"#{leader + 1} wins: its click rate beats every other subject's "
            f"at {confidence:.0%} confidence (p = {max(p_values):.3f})",
            p_values,
        )
    return Verdict(
        None,
        f"no winner yet: #{leader + 1} leads, but the difference is not significant "
        f"at {confidence:.0%} (p = {max(p_values):.3f}, needed under {alpha:.3f})",
        p_values,
    )
