"""The periodic jobs besides the dispatch tick, each a function of the runtime and `now`.

Jobs that must run once in a whole cluster (decay, stale recycling) take a PostgreSQL
advisory lock; on SQLite one process runs everything.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Engine as Database
from sqlalchemy import select, text

from nurture.core.scoring import NEGLIGIBLE, decay_label, decayed
from nurture.db import is_sqlite, write_transaction
from nurture.feedback import recycle_stale
from nurture.handoffs import deliver_handoffs
from nurture.journeys import deliver_webhooks
from nurture.models import Contact, ScoreChange
from nurture.notices import deliver_notices
from nurture.promotion import promote_winners
from nurture.rescore import rescore_if_changed
from nurture.runtime import Runtime

#: The stored engagement is rewritten when decay has taken at least this much off it;
#: readers always compute the exact current value from (engagement, engagement_at).
DECAY_STEP = 0.5
#: The lock of a fit rescore (nurture/rescore.py): one process in the cluster does it.
RESCORE_LOCK = "fit-rescore"


@contextmanager
def cluster_once(database: Database, name: str) -> Iterator[bool]:
    """True for the one process in the cluster that holds the lock named `name`."""
    if is_sqlite(database):
        yield True
        return
    key = zlib.crc32(f"nurture.job.{name}".encode())
    with database.connect() as connection:
        held = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))
        try:
            yield held
        finally:
            if held:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()


def decay_scores(runtime: Runtime, now: datetime, batch: int = 1000) -> int:
    """Write decayed engagement back to the contacts, with a ledger line each; how many.

    Streams the contacts in id order, `batch` at a time, each batch its own transaction.
    """
    rules = runtime.project.settings.scoring.engagement
    if rules.half_life is None and rules.decay is None:
        return 0
    label = decay_label(rules)
    changed, last_id = 0, 0
    while True:
        with write_transaction(runtime.database) as session:
            rows = list(
                session.scalars(
                    select(Contact)
                    .where(Contact.id > last_id, Contact.engagement != 0)
                    .order_by(Contact.id)
                    .limit(batch)
                )
            )
            for contact in rows:
                value, anchor = decayed(contact.engagement, contact.engagement_at, now, rules)
                lost = contact.engagement - value
                if abs(lost) < DECAY_STEP and abs(value) >= NEGLIGIBLE:
                    continue
                session.add(
                    ScoreChange(
                        contact_id=contact.id,
                        at=now,
                        axis="engagement",
                        points=-lost,
                        value_after=value,
                        rule=label,
                    )
                )
                contact.engagement, contact.engagement_at = value, anchor
                changed += 1
        if len(rows) < batch:
            return changed
        last_id = rows[-1].id


def recycle_job(runtime: Runtime, now: datetime) -> int:
    total = 0
    while True:
        with write_transaction(runtime.database) as session:
            count = recycle_stale(session, runtime.project, now)
        total += count
        if count == 0:
            return total


def promote_job(runtime: Runtime, now: datetime) -> int:
    """Record the subject tests (`promote_winner: true`) that now call a winner; how many."""
    with write_transaction(runtime.database) as session:
        return len(promote_winners(session, runtime.project, now))


def run_periodic(runtime: Runtime, now: datetime) -> dict[str, int]:
    """One round of every periodic job (what `nurture tick` and the simulator call)."""
    done: dict[str, int] = {}
    with cluster_once(runtime.database, RESCORE_LOCK) as mine:
        if mine:
            rescored = rescore_if_changed(runtime.project, runtime.database, now)
            done["rescored"] = rescored.changed if rescored else 0
    with cluster_once(runtime.database, "decay") as mine:
        if mine:
            done["decayed"] = decay_scores(runtime, now)
    with cluster_once(runtime.database, "recycle") as mine:
        if mine:
            done["recycled"] = recycle_job(runtime, now)
    with cluster_once(runtime.database, "promote") as mine:
        if mine:
            done["promoted"] = promote_job(runtime, now)
    stop = runtime.dispatcher.stopping
    done["handed_off"], done["handoff_failures"] = deliver_handoffs(
        runtime.project, runtime.database, now, stop=stop
    )
    done["notices"] = deliver_notices(
        runtime.database, runtime.dispatcher.transport, now, stop=stop
    )
    done["webhooks"], done["webhook_failures"] = deliver_webhooks(
        runtime.project, runtime.database, now, stop=stop
    )
    return done
