"""Fit after the fit rules change: everyone rescored in chunks, each change in the ledger
with the rule change as its cause, the stage moves that follow with theirs.

The rules a stored fit follows are kept in `rule_sets` by digest (the fit rules, with the
lists and custom field declarations they read). `rescore_if_changed` compares the current
digest with the newest recorded one: at start, after the running engine reloads nurture.yaml
(the fit-rules job, every minute) and in every `nurture tick`. A database that has never
recorded rules records them as they are, without rescoring (`nurture rescore` does a full
pass by hand). An interrupted rescore is taken up again where the rules are still the newest:
rescoring is idempotent, a contact whose fit did not change gets no ledger line.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine as Database
from sqlalchemy import func, select

from nurture.config import Settings
from nurture.db import write_transaction
from nurture.feedback import rescore_fit
from nurture.models import Contact, RuleSet
from nurture.project import Project

KIND = "fit"
BATCH = 500


@dataclass
class Rescored:
    """What one pass did: contacts looked at, fits changed, stage moves made."""

    cause: str
    contacts: int = 0
    changed: int = 0
    moved: int = 0


def fit_rules(settings: Settings) -> dict[str, Any]:
    """Everything a fit depends on, as plain JSON."""
    return {
        "fit": [rule.model_dump(mode="json") for rule in settings.scoring.fit],
        "lists": settings.lists,
        "custom_fields": {
            name: spec.model_dump(mode="json") for name, spec in settings.custom_fields.items()
        },
    }


def digest(rules: Mapping[str, Any]) -> str:
    text = json.dumps(rules, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def describe_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """The cause a ledger line gives: `fit rules changed: + A; ~ B; - C` (by label)."""
    if old is None:
        return "fit rules rescored by hand"
    before = {rule["label"]: rule for rule in old.get("fit", [])}
    after = {rule["label"]: rule for rule in new.get("fit", [])}
    parts = [f"+ {label}" for label in after if label not in before]
    parts += [f"~ {label}" for label in after if label in before and before[label] != after[label]]
    parts += [f"- {label}" for label in before if label not in after]
    if old.get("lists") != new.get("lists"):
        parts.append("lists changed")
    if old.get("custom_fields") != new.get("custom_fields"):
        parts.append("custom fields changed")
    return "fit rules changed: " + ("; ".join(parts) or "order of the rules")


def _newest(session: Any) -> RuleSet | None:
    found: RuleSet | None = session.scalars(
        select(RuleSet).where(RuleSet.kind == KIND).order_by(RuleSet.id.desc()).limit(1)
    ).first()
    return found


def pending(
    database: Database, settings: Settings, now: datetime, *, force: bool = False
) -> str | None:
    """Record the current fit rules; the cause to rescore everyone with, or None when the
    stored fits already follow them (or nothing was recorded before, unless `force`)."""
    rules = fit_rules(settings)
    current = digest(rules)
    with write_transaction(database) as session:
        newest = _newest(session)
        if newest is not None and newest.digest == current:
            if newest.done_at is None:
                return str(newest.rules.get("cause", "fit rules changed"))
            if not force:
                return None
        if newest is None and not force:
            session.add(RuleSet(kind=KIND, digest=current, rules=rules, seen_at=now, done_at=now))
            return None
        previous = None if newest is None or force else newest.rules
        cause = describe_change(previous, rules)[:200]
        session.add(
            RuleSet(
                kind=KIND,
                digest=current,
                rules={**rules, "cause": cause},
                seen_at=now,
                done_at=None,
            )
        )
        return cause


def rescore_all(
    project: Project,
    database: Database,
    now: datetime,
    cause: str,
    *,
    batch: int = BATCH,
    progress: Callable[[int], None] = lambda n: None,
    stop: threading.Event | None = None,
) -> Rescored:
    """Every contact's fit under the current rules, `batch` contacts a transaction (in id
    order, their rows locked), then the newest rule set marked done. Once `stop` is set,
    the pass ends after the batch in hand, the rule set left pending: the next pass takes
    it up."""
    result = Rescored(cause)
    last_id = 0
    while True:
        if stop is not None and stop.is_set():
            return result
        with write_transaction(database) as session:
            rows = list(
                session.scalars(
                    select(Contact)
                    .where(Contact.id > last_id)
                    .order_by(Contact.id)
                    .limit(batch)
                    .with_for_update()
                )
            )
            for contact in rows:
                before = contact.fit
                outcome = rescore_fit(session, project, contact, now, cause)
                result.changed += contact.fit != before
                result.moved += len(outcome.moves)
        result.contacts += len(rows)
        progress(len(rows))
        if len(rows) < batch:
            break
        last_id = rows[-1].id
    current = digest(fit_rules(project.settings))
    with write_transaction(database) as session:
        newest = _newest(session)
        if newest is not None and newest.digest == current:
            newest.done_at = now
    return result


def contact_count(database: Database) -> int:
    with database.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(Contact)) or 0)


def rescore_if_changed(
    project: Project,
    database: Database,
    now: datetime,
    *,
    force: bool = False,
    batch: int = BATCH,
    progress: Callable[[int], None] = lambda n: None,
    stop: threading.Event | None = None,
) -> Rescored | None:
    """Rescore everyone when the fit rules differ from those the stored fits follow (until
    `stop` is set: `rescore_all`)."""
    cause = pending(database, project.settings, now, force=force)
    if cause is None:
        return None
    return rescore_all(project, database, now, cause, batch=batch, progress=progress, stop=stop)
