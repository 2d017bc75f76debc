"""Wiring: a loaded project, its database, its signer and its dispatcher, from a folder."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine as Database

from nurture import environment
from nurture.clock import Clock, SystemClock
from nurture.db import make_engine, sqlite_url, upgrade
from nurture.engine import Dispatcher
from nurture.handoffs import SECRET_ENV, handoff_secret
from nurture.keys import secret_key
from nurture.problems import Problem, ProjectError
from nurture.project import Project, load_project
from nurture.tracking import Links
from nurture.transport import MimeBuilder, OutboxTransport, SmtpTransport, Transport

DATABASE_ENV = environment.DATABASE_URL
SMTP_ENV = environment.SMTP_URL


@dataclass
class Runtime:
    project: Project
    database: Database
    links: Links
    dispatcher: Dispatcher
    clock: Clock


def database_url(project: Project, override: str | None = None) -> str:
    """--db, then NURTURE_DATABASE_URL, then nurture.yaml, then nurture.db beside nurture.yaml."""
    if override:
        return override if "://" in override else sqlite_url(Path(override).resolve())
    return (
        environment.read(DATABASE_ENV)
        or project.settings.database_url
        or sqlite_url(project.database_path)
    )


def make_transport(project: Project) -> Transport:
    """SMTP when NURTURE_SMTP_URL or delivery.smtp_url says so, else the outbox folder."""
    delivery = project.settings.delivery
    try:
        builder = MimeBuilder(
            project.settings.sender, delivery.list_id, delivery.dkim, project.root
        )
    except OSError as exc:  # the DKIM key file
        raise ProjectError(
            [Problem("nurture.yaml", None, f"delivery.dkim.private_key_file: {exc}")]
        ) from None
    url = environment.read(SMTP_ENV) or delivery.smtp_url
    if url:
        try:
            return SmtpTransport(
                url,
                builder,
                pool=delivery.pool,
                retries=delivery.retries,
                backoff=delivery.retry_backoff.total_seconds(),
            )
        except ValueError as exc:  # the message shows the URL with its password masked
            field = SMTP_ENV if environment.read(SMTP_ENV) else "delivery.smtp_url"
            raise ProjectError([Problem("nurture.yaml", None, f"{field}: {exc}")]) from None
    return OutboxTransport(project.outbox_dir, builder)


def checked_project(root: Path) -> Project:
    """The project, loaded and checked as a start needs it (`run`, `worker`, `doctor`):
    every file valid, the hand-off secret there when a webhook is set; ProjectError else."""
    project = load_project(root)
    handoff = project.settings.handoff
    if handoff is not None and handoff.webhook_url and not handoff_secret(handoff):
        raise ProjectError(
            [
                Problem(
                    "nurture.yaml",
                    None,
                    f"handoff.webhook_secret: required with webhook_url; set {SECRET_ENV} "
                    "(or webhook_secret) to the key the receiver checks signatures with",
                )
            ]
        )
    return project


def check_start(root: Path) -> Project:
    """Everything `run` (`open_runtime`) checks before it starts, nothing started: the
    files, the secrets and settings the environment must give (the hand-off secret, the SMTP
    URL, the DKIM key). `validate` runs this same check, so it never says ok where `run`
    refuses. ProjectError lists the problems."""
    project = checked_project(root)
    make_transport(project)
    return project


def open_runtime(
    root: Path,
    *,
    clock: Clock | None = None,
    database: str | None = None,
    transport: Transport | None = None,
    migrate: bool = True,
) -> Runtime:
    project = checked_project(root)
    engine = make_engine(database_url(project, database))
    if migrate:
        upgrade(engine)
    links = Links(secret_key(project.instance_dir), project.settings.base_url)
    clock = clock or SystemClock()
    transport = transport or make_transport(project)
    dispatcher = Dispatcher(project, engine, transport, clock, links)
    return Runtime(project, engine, links, dispatcher, clock)


def freeze_loaded() -> None:
    """Before a long-running process starts its loop (`nurture run`, `nurture worker`): take
    what is loaded now (modules, the project, its compiled templates and expressions) out of
    the garbage collector's scans, which otherwise walk all of it again in every full
    collection the dispatch loop's allocations set off (about a tenth of a tick's CPU, as
    `bench/dispatch_cpu.py` measures). Frozen objects are still freed when no longer
    referenced; a project loaded later (an edited file) is scanned as usual. Not for tests
    or short commands, which would keep their garbage cycles for the process's life."""
    gc.collect()
    gc.freeze()
