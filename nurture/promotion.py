"""`promote_winner: true`: once a piece's subject test calls a winner, everyone after gets it.

A periodic job (once in a cluster) asks the winner rule (nurture/core/winner.py, through
`reports.subject_test`, the dashboard's and `nurture stats`' own verdict) about each piece
that promotes and has no winner yet, and records the winner with when and why in
`subject_winners`. The dispatcher reads that table at each batch: a recorded winner is the
subject of every later email of the piece, in every language.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nurture.content import Piece
from nurture.models import SubjectWinner
from nurture.project import Project
from nurture.reports import subject_lines, subject_test
from nurture.stats import content_stats


def promoted(session: Session) -> dict[str, int]:
    """Content id -> the variant (0-based) every email of it now gets."""
    return dict(session.execute(select(SubjectWinner.content_id, SubjectWinner.variant)).all())


def promote_winners(session: Session, project: Project, now: datetime) -> list[SubjectWinner]:
    """Record the winner of every promoting piece whose test now calls one; the new rows."""
    done = promoted(session)
    waiting: dict[str, Piece] = {
        id: piece
        for id, piece in project.content.items()
        if piece.front.promote_winner and id not in done
    }
    if not waiting:
        return []
    lines = content_stats(session, waiting)
    found = []
    for id, piece in sorted(waiting.items()):
        mine = [line for line in lines if line.content_id == id]
        _, verdict = subject_test(subject_lines(piece), mine)
        if verdict.winner is None:
            continue
        row = SubjectWinner(
            content_id=id, variant=verdict.winner, decided_at=now, reason=verdict.reason
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # another process recorded it first: theirs stands
            continue
        found.append(row)
    return found
