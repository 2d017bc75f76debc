"""The `nurture` command."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.apikeys import create_key, revoke_key
from nurture.clock import FileClock, as_utc
from nurture.contacts import normalize_email
from nurture.content import preview_unsubscribe_url, render_email, sample_contact
from nurture.core import eventtime
from nurture.core.words import counted
from nurture.db import close as close_database
from nurture.db import make_engine, sessions, upgrade
from nurture.feedback import (
    Outcome,
    UnknownContact,
    move_stage,
    record_event,
    sales_outcome,
    set_caps,
    upsert_contact,
)
from nurture.feedback import suppress as suppress_address
from nurture.imports import import_csv, write_rejects
from nurture.jobs import run_periodic
from nurture.logs import FORMAT_ENV as LOG_FORMAT_ENV
from nurture.logs import LEVEL_ENV as LOG_LEVEL_ENV
from nurture.logs import LEVELS as LOG_LEVELS
from nurture.logs import setup as setup_logs
from nurture.models import MESSAGE_STATUSES, ApiKey, Contact
from nurture.problems import ProjectError
from nurture.project import Project, load_project
from nurture.redact import redact_text
from nurture.runtime import Runtime, check_start, database_url, freeze_loaded, open_runtime
from nurture.segments import Segment
from nurture.transport import NullTransport, OutboxTransport
from nurture.users import create_user, end_sessions, find_user, set_password

T = TypeVar("T")
#: `--at`: an instant, UTC unless an offset is given.
AT = click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"])


class Context:
    def __init__(self, root: Path, database: str | None) -> None:
        self.root = root
        self.database = database

    def project(self) -> Project:
        return _or_exit(lambda: load_project(self.root))

    def runtime(self) -> Runtime:
        return _or_exit(lambda: open_runtime(self.root, database=self.database))


def _wait_for(stop: threading.Event) -> None:
    """Block the main thread until `stop` is set by a signal handler (SIGTERM, Ctrl-C).

    Python runs signal handlers in the main thread only, between two bytecodes; the kernel
    may deliver SIGTERM to any thread (the web server's, the scheduler's), which then only
    marks it pending. A main thread blocked in `stop.wait()` with no timeout is never woken
    to run the handler, and the process ignores the signal (seen: `nurture run` still up a
    minute after SIGTERM, one start in five with four others beside it). Waking every half
    second runs a pending handler within that time."""
    while not stop.wait(0.5):
        pass


def _or_exit(load: Callable[[], T]) -> T:
    try:
        return load()
    except ProjectError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        count = len(exc.problems)
        click.echo(f"{count} problem{'s' if count > 1 else ''}; nothing started.", err=True)
        sys.exit(1)


def _address(value: str | None) -> str | None:
    from nurture.metrics import parse_address

    if value is not None:
        try:
            parse_address(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value")
        out[key] = value
    return out


@click.group()
@click.option(
    "--project",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Project folder holding nurture.yaml.",
)
@click.option("--db", "database", help="Database URL or SQLite file (default: nurture.db).")
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does (--log-level info).")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    envvar=LOG_LEVEL_ENV,
    help=f"debug, info, warning (the default) or error; {LOG_FORMAT_ENV}=json for JSON lines.",
)
@click.version_option(package_name="nurture")
@click.pass_context
def main(
    ctx: click.Context, root: Path, database: str | None, verbose: bool, log_level: str | None
) -> None:
    """Nurture contacts from first interest to a sale, paced so nobody is pestered."""
    try:
        setup_logs(log_level or ("info" if verbose else "warning"))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    ctx.obj = Context(root, database)


@main.command()
@click.pass_obj
def validate(obj: Context) -> None:
    """Check nurture.yaml, every workflow and every piece of content; exit 1 on any problem.

    Warnings (a track nobody can reach, for instance) are printed and do not fail. What
    `run` needs from the environment (NURTURE_HANDOFF_SECRET with a hand-off webhook,
    NURTURE_SMTP_URL, the DKIM key file) is checked by the same code as `run`'s start."""
    from nurture.reachability import warnings

    project = _or_exit(lambda: check_start(obj.root))
    for problem in warnings(project.root, project.settings, project.workflows):
        where = f"{problem.path}:{problem.line}" if problem.line else problem.path
        click.echo(f"{where}: warning: {problem.message}", err=True)
    click.echo(f"ok: {len(project.workflows)} workflows, {len(project.content)} pieces of content")


@main.command()
@click.pass_obj
def stats(obj: Context) -> None:
    """Sent, real opens and real clicks per piece; per subject test, each subject line's
    numbers and the winner rule's verdict (the dashboard's), and a promoted winner."""
    from nurture.models import SubjectWinner
    from nurture.reports import subject_lines, subject_test
    from nurture.stats import content_stats

    runtime = obj.runtime()
    with sessions(runtime.database)() as session:
        lines = content_stats(session)
        winners = {w.content_id: w for w in session.scalars(select(SubjectWinner))}
    click.echo(f"{'content':<44} {'sent':>6} {'real opens':>15} {'real clicks':>15}")
    tested: dict[str, list[Any]] = {}
    for line in lines:
        label = line.content_id
        piece = runtime.project.content.get(line.content_id)
        if line.variant is not None and piece is not None:
            label = f"{line.content_id} #{line.variant + 1}"
            tested.setdefault(line.content_id, []).append(line)
        click.echo(
            f"{label:<44} {line.sent:>6} {line.opened:>6} ({line.open_rate:6.1%}) "
            f"{line.clicked:>6} ({line.click_rate:6.1%})"
        )
    for content_id, own in tested.items():
        piece = runtime.project.content[content_id]
        results, verdict = subject_test(subject_lines(piece), own)
        click.echo(f"\nsubject test of {content_id}:")
        for result in results:
            text = result.subjects.get("", next(iter(result.subjects.values()), ""))
            mark = " (winner)" if result.winner else ""
            click.echo(f"{content_id} #{result.number}: {text}")
            click.echo(
                f"  {result.sent} sent, {result.opened} real opens, "
                f"{result.clicked} real clicks{mark}"
            )
        click.echo(f"  verdict: {verdict.reason}")
        won = winners.get(content_id)
        if won is not None:
            click.echo(
                f"  promoted: #{won.variant + 1} to everyone since "
                f"{won.decided_at:%Y-%m-%d %H:%M} UTC"
            )
        elif piece.front.promote_winner:
            click.echo("  promote_winner: the winner goes to everyone once one is called")
    click.echo("machine opens and scanner clicks are left out; n = emails sent", err=True)


@main.command("lift")
@click.argument("workflow")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option(
    "--at", "at", type=AT, help="As of this time (UTC unless an offset is given); default: now."
)
@click.pass_obj
def lift_(obj: Context, workflow: str, as_json: bool, at: datetime | None) -> None:
    """What WORKFLOW changed: per stage reached after entry and per window, the people it
    emailed against its holdout group (rates, difference, 95% interval, sample sizes)."""
    from nurture.lift import METHOD, MIN_PEOPLE, as_dict, heading, lift, stage_label

    runtime = obj.runtime()
    found = runtime.project.workflows.get(workflow)
    if found is None:
        known = ", ".join(sorted(runtime.project.workflows))
        raise click.ClickException(f"no workflow {workflow!r} (workflows: {known})")
    with sessions(runtime.database)() as session:
        now = as_utc(at) if at else runtime.clock.now()
        result = lift(session, runtime.project.settings, workflow, found.holdout, now)
    if as_json:
        click.echo(json.dumps(as_dict(result), indent=2))
        return
    click.echo(heading(result))
    if result.since is None:
        return
    click.echo(f"interval: {METHOD}; {MIN_PEOPLE} people per group at least")
    stage = None
    for item in result.shown:
        if item.stage != stage:
            stage = item.stage
            click.echo(f"reached {stage_label(stage)}:")
        click.echo(f"  {item.when + ':':<16} {item.sentence}")
    if result.pending_sentence:
        click.echo(result.pending_sentence)


@main.command()
@click.pass_obj
def lint(obj: Context) -> None:
    """Check content for what hurts in an inbox; each finding as path:line; exit 1 on errors."""
    from nurture.lint import fields_in_use
    from nurture.lint import lint as lint_project

    project = obj.project()
    counts = None
    url = database_url(project, obj.database)
    sqlite_file = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if sqlite_file is None or Path(sqlite_file).exists():  # never create a database to lint
        runtime = obj.runtime()
        with sessions(runtime.database)() as session:
            counts = fields_in_use(session, project.settings)
    findings = lint_project(project, counts)
    for finding in findings:
        click.echo(str(finding))
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    click.echo(f"{len(project.content)} pieces: {errors} errors, {warnings} warnings", err=True)
    if errors:
        sys.exit(1)


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the schema files (default: schema/ in the project).",
)
@click.option("--check", is_flag=True, help="Exit 1 if the files differ from the models.")
@click.pass_obj
def schema(obj: Context, out: Path | None, check: bool) -> None:
    """Write the JSON Schemas of nurture.yaml and workflow files, for editors."""
    from nurture import schema as schemas

    directory = out or obj.root / "schema"
    if check:
        differ = schemas.stale(directory)
        if differ:
            raise click.ClickException(f"out of date: {', '.join(differ)}; run nurture schema")
        click.echo("schemas up to date")
        return
    for path in schemas.write(directory):
        click.echo(f"wrote {path}")


@main.command()
@click.pass_obj
def run(obj: Context) -> None:
    """Run the engine and serve the links in emails, until Ctrl-C or SIGTERM."""
    import waitress

    from nurture.scheduler import build_scheduler
    from nurture.web import create_app

    runtime = obj.runtime()
    settings = runtime.project.settings
    host, port = settings.listen.rsplit(":", 1)
    server = waitress.create_server(create_app(runtime), host=host, port=int(port), threads=8)
    web = threading.Thread(target=server.run, name="web", daemon=True)
    scheduler = build_scheduler(runtime)
    freeze_loaded()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    web.start()
    scheduler.start()
    url = database_url(runtime.project, obj.database)
    transport = runtime.dispatcher.transport
    delivery = f"outbox {transport.directory}" if isinstance(transport, OutboxTransport) else "SMTP"
    click.echo(
        f"nurture running: database {redact_text(url)}, {delivery}, a dispatch tick every "
        f"{settings.tick_seconds:g}s; links served on http://{settings.listen} "
        f"(emails point to {settings.base_url}). Ctrl-C stops."
    )
    try:
        _wait_for(stop)
    except KeyboardInterrupt:
        pass
    finally:
        runtime.dispatcher.stop()  # the batch in hand is finished, no other started
        scheduler.shutdown(wait=True)
        server.close()
        close_database(runtime.database)
        click.echo("stopped")


@main.command()
@click.option(
    "--dry-run",
    is_flag=True,
    help="Plan, pace, render and record, but hand no email to a transport (load tests).",
)
@click.option("--clock-file", type=click.Path(path_type=Path), hidden=True)
@click.option(
    "--metrics",
    "metrics_address",
    metavar="HOST:PORT",
    callback=lambda _c, _p, value: _address(value),
    help="Serve this worker's Prometheus /metrics there (e.g. 127.0.0.1:9108).",
)
@click.pass_obj
def worker(
    obj: Context, dry_run: bool, clock_file: Path | None, metrics_address: str | None
) -> None:
    """Run the dispatch tick and the periodic jobs, serving no web pages, until SIGTERM.

    Start any number of them against one PostgreSQL database (NURTURE_DATABASE_URL): they
    share the due work (FOR UPDATE SKIP LOCKED), and the jobs that must run once in the
    cluster (decay, reconciliation, stale hand-offs) take an advisory lock.
    """
    from nurture.scheduler import build_scheduler, drain

    runtime = _or_exit(
        lambda: open_runtime(
            obj.root,
            database=obj.database,
            clock=FileClock(clock_file) if clock_file else None,
            transport=NullTransport() if dry_run else None,
        )
    )
    freeze_loaded()
    stop = threading.Event()

    def on_sigterm(*_: object) -> None:
        runtime.dispatcher.stop()  # finish the batch in hand, start no other
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    url = database_url(runtime.project, obj.database)
    shown = redact_text(url)
    click.echo(f"nurture worker: database {shown}{', dry run' if dry_run else ''}")
    if metrics_address:
        from nurture.metrics import serve

        serve(metrics_address, runtime.database, runtime.clock)
        click.echo(f"metrics on http://{metrics_address}/metrics")
    if clock_file is not None:
        drain(runtime, stop)
        return
    scheduler = build_scheduler(runtime)
    scheduler.start()
    try:
        _wait_for(stop)
    except KeyboardInterrupt:
        pass
    finally:
        runtime.dispatcher.stop()  # the batch in hand is finished, no other started
        scheduler.shutdown(wait=True)
        close_database(runtime.database)
        click.echo("stopped")


@main.command()
@click.pass_obj
def doctor(obj: Context) -> None:
    """Check what makes a deployment fail, and say how to fix each: configuration, secret
    key, database, SMTP, base URL, and the sender's domain (SPF, DKIM, DMARC, MX).

    One line each: ok, warn or error. Exit 1 on any error, 0 with warnings only."""
    from nurture.doctor import diagnose, exit_status

    checks = diagnose(obj.root, obj.database)
    for check in checks:
        click.echo(str(check))
    sys.exit(exit_status(checks))


@main.command("plan")
@click.option("--json", "as_json", is_flag=True, help="One JSON list instead of text.")
@click.option(
    "--days",
    type=click.IntRange(1, 365),
    default=None,
    help="Also rehearse the next N days on a copy of the (SQLite) database, old versions "
    "against new: emails per content.",
)
@click.pass_obj
def plan_(obj: Context, as_json: bool, days: int | None) -> None:
    """What the engine will do with the people in flight when it takes up the files as
    they are now: steps added, removed, moved, renamed; who continues, moves, finishes or
    is held, and why; and for a workflow entering by segment, the backfill `nurture
    enroll` would do (who would enter, when their first emails would go). Changes nothing."""
    from nurture.audiences import enroll as enroll_segment
    from nurture.audiences import schedule_lines, summary
    from nurture.planrun import NotSupported, rehearse_edit
    from nurture.reload import edit_plan, format_plan
    from nurture.runtime import database_url

    runtime = obj.runtime()
    report = edit_plan(runtime.database, runtime.project)
    backfills = [
        enroll_segment(
            runtime.database, runtime.project, w.id, None, runtime.clock.now(), dry_run=True
        )
        for w in runtime.project.workflows.values()
        if w.enter.segment is not None
    ]
    rehearsal = None
    if days is not None:
        url = database_url(runtime.project, obj.database)
        runtime.database.dispose()
        try:
            rehearsal = rehearse_edit(obj.root, url, runtime.clock.now(), days)
        except NotSupported as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        body: Any = report
        if rehearsal is not None or backfills:
            body = {"workflows": report}
        if rehearsal is not None:
            body["rehearsal"] = {"days": days, "before": rehearsal.old, "after": rehearsal.new}
        if backfills:
            body["backfill"] = [
                {
                    "workflow": b.workflow,
                    "segment": b.segment,
                    "members": b.members,
                    "would_enter": len(b.entered),
                    "first_emails": {
                        day.isoformat(): {
                            "count": n,
                            "first": first.isoformat(),
                            "last": last.isoformat(),
                        }
                        for day, (n, first, last) in b.schedule.items()
                    },
                    "unreachable": b.unreachable,
                }
                for b in backfills
            ]
        click.echo(json.dumps(body, indent=2))
    else:
        for line in format_plan(report):
            click.echo(line)
        for backfill in backfills:
            click.echo(f"backfill: {summary(backfill)}")
            for line in schedule_lines(backfill, runtime.project.settings.timezone):
                click.echo(line)
            click.echo(
                f"  apply with: nurture enroll {backfill.workflow} --segment {backfill.segment}"
            )
        for line in rehearsal.lines() if rehearsal else ():
            click.echo(line)


@main.command()
@click.pass_obj
def tick(obj: Context) -> None:
    """Run one dispatch tick now and say what it did."""
    runtime = obj.runtime()
    unknown, late = runtime.dispatcher.reconcile()
    if unknown or late:
        click.echo(f"reconciled: {unknown} unknown after a stop, {late} delivered late")
    report = runtime.dispatcher.tick()
    click.echo(
        f"{report.sent} sent, {report.deferred} deferred, {report.later} due later, "
        f"{report.idle} idle, {report.ended} ended, {report.failed} failed"
    )
    done = run_periodic(runtime, runtime.clock.now())
    if any(done.values()):
        click.echo(", ".join(f"{name.replace('_', ' ')} {n}" for name, n in done.items() if n))
    if report.deferral_reasons:
        held = ", ".join(f"{rule} {n}" for rule, n in sorted(report.deferral_reasons.items()))
        click.echo(f"held by: {held}")


@main.command()
@click.option(
    "--all", "everyone", is_flag=True, help="Rescore everyone even if the rules did not change."
)
@click.pass_obj
def rescore(obj: Context, everyone: bool) -> None:
    """Rescore everyone's fit under the current fit rules, if they changed (or --all).

    Each change is in the score ledger with the rule change as its cause; the stage moves
    that follow are recorded with theirs. A running engine does the same on its own."""
    from nurture.jobs import RESCORE_LOCK, cluster_once
    from nurture.rescore import contact_count, pending, rescore_all

    runtime = obj.runtime()
    now = runtime.clock.now()
    with cluster_once(runtime.database, RESCORE_LOCK) as mine:
        if not mine:
            raise click.ClickException("another process is rescoring now; try again later")
        cause = pending(runtime.database, runtime.project.settings, now, force=everyone)
        if cause is None:
            click.echo("fit rules unchanged: nothing to rescore (--all rescores anyway)")
            return
        total = contact_count(runtime.database)
        with click.progressbar(length=total, label="rescoring", file=sys.stderr) as bar:
            done = rescore_all(runtime.project, runtime.database, now, cause, progress=bar.update)
    click.echo(
        f"{done.cause}\n{counted(done.contacts, 'contact')} rescored: "
        f"{counted(done.changed, 'fit')} changed, {counted(done.moved, 'stage move')}"
    )


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="COLUMN=FIELD",
    help="Read COLUMN into FIELD (repeatable); COLUMN= leaves a column out.",
)
@click.option("--stage", help="Stage for the imported people (default: contact, no nurture).")
@click.option("--source", help="Lead source for new contacts (e.g. salon-2026).")
@click.option("--consent", help="Where and how these people gave consent.")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the rejected rows (default: FILE.rejected.csv).",
)
@click.pass_obj
def import_(
    obj: Context,
    file: Path,
    maps: tuple[str, ...],
    stage: str | None,
    source: str | None,
    consent: str | None,
    rejects: Path | None,
) -> None:
    """Import contacts from a CSV file; bad rows are reported, the good rows kept.

    nurture import salon.csv --map "E-mail=email" --map "Société=company" --source salon-2026
    """
    runtime = obj.runtime()
    explicit = {}
    for item in maps:
        column, sep, target = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: write COLUMN=FIELD", param_hint="--map")
        explicit[column] = target
    with file.open("rb") as handle:
        total = sum(1 for _ in handle) - 1
    try:
        with click.progressbar(length=max(total, 0), label="importing", file=sys.stderr) as bar:
            report = import_csv(
                runtime.project,
                runtime.database,
                file,
                explicit,
                runtime.clock.now(),
                stage=stage,
                source=source,
                consent=consent,
                progress=bar.update,
            )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for column in report.ignored_columns:
        click.echo(f"column {column!r} left out (--map {column}=)")
    click.echo(
        f"{report.created} created, {report.updated} updated, "
        f"{report.merged} duplicate rows merged, {len(report.rejected)} rejected"
    )
    if report.rejected:
        out = rejects or file.with_suffix(".rejected.csv")
        write_rejects(out, report.columns, report.rejected)
        for bad in report.rejected[:10]:
            click.echo(f"  line {bad.line}: {bad.reason}")
        click.echo(f"rejected rows with their reasons: {out}")


@contextmanager
def _days_bar(days: int, label: str, *, quiet: bool) -> Iterator[Callable[[float], None]]:
    """A progress bar on stderr over the simulated days (none when `quiet`); yields the
    callback the simulation calls with the days it has lived."""
    if quiet:
        yield lambda _: None
        return
    if not sys.stderr.isatty():  # a log, not a terminal: one line per tenth of the way
        shown = [0]

        def line(lived: float) -> None:
            tenth = min(10, int(lived * 10 / days))
            if tenth > shown[0]:
                shown[0] = tenth
                click.echo(f"{label}: day {min(days, int(lived))} of {days}", err=True)

        yield line
        line(days)
        return
    with click.progressbar(length=days, label=label, file=sys.stderr, show_pos=True) as bar:

        def advance(lived: float) -> None:
            done = min(days, int(lived))
            if done > bar.pos:
                bar.update(done - bar.pos)

        yield advance
        bar.update(days - bar.pos)


@main.command()
@click.option("--days", default=45, show_default=True, type=click.IntRange(7, 365))
@click.option("--contacts", default=400, show_default=True, type=click.IntRange(10, 100_000))
@click.option("--port", default=5050, show_default=True, type=click.IntRange(1, 65535))
@click.pass_obj
def demo(obj: Context, days: int, contacts: int, port: int) -> None:
    """Build a demo database with the simulator and serve the dashboard on it.

    The simulated people live through the project's real workflows, caps and scores; the
    dashboard's clock stands at the simulation's end, so \"today\" and \"7 days\" show data.
    """
    import secrets as random_words

    import waitress

    from nurture.clock import FixedClock
    from nurture.simulate import START, simulate
    from nurture.web import create_app

    project = obj.project()
    path = project.instance_dir / "demo.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob("demo.db*"):
        old.unlink()
    click.echo(
        f"simulating {counted(contacts, 'person')} over {counted(days, 'day')} into {path} ..."
    )
    with _days_bar(days, "simulating", quiet=False) as advance:
        result = simulate(
            obj.root, days=days, contacts=contacts, seed=1, database=str(path), progress=advance
        )
    end = START + timedelta(days=days)
    runtime = open_runtime(obj.root, clock=FixedClock(end), database=str(path))
    password = random_words.token_urlsafe(12)
    with sessions(runtime.database).begin() as session:
        create_user(session, "demo@nurture.example", password, runtime.clock.now())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # a clean stop, exit code 0
    emails = sum(result.messages_by_phase.values())
    click.echo(
        f"{counted(emails, 'email')}, {counted(sum(result.events.values()), 'event')}; stages: "
        + ", ".join(f"{stage} {n}" for stage, n in result.stages.items())
    )
    click.echo(f"dashboard: http://127.0.0.1:{port}/  login: demo@nurture.example / {password}")
    click.echo("Ctrl-C stops.")
    server = waitress.create_server(create_app(runtime), host="127.0.0.1", port=port, threads=4)
    web = threading.Thread(target=server.run, name="web", daemon=True)
    web.start()
    try:
        _wait_for(stop)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        close_database(runtime.database)
        click.echo("stopped")


@main.group()
def user() -> None:
    """Dashboard users."""


@user.command("create")
@click.argument("email")
@click.password_option(help="Asked for when not given (12 characters or more).")
@click.pass_obj
def user_create(obj: Context, email: str, password: str) -> None:
    """Create a dashboard login: nurture user create ops@keel.example"""
    runtime = obj.runtime()
    try:
        with sessions(runtime.database).begin() as session:
            create_user(session, email, password, runtime.clock.now())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {normalize_email(email)} created")


@user.command("password")
@click.argument("email")
@click.password_option(help="Asked for when not given (12 characters or more).")
@click.pass_obj
def user_password(obj: Context, email: str, password: str) -> None:
    """Set a new password for EMAIL; every session of that user ends."""
    runtime = obj.runtime()
    try:
        with sessions(runtime.database).begin() as session:
            ended = set_password(session, email, password, runtime.clock.now())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password of {normalize_email(email)} changed; {ended} session(s) ended")


@user.group("sessions")
def user_sessions() -> None:
    """Dashboard sessions (logins)."""


@user_sessions.command("end")
@click.argument("email", required=False)
@click.option("--all", "everyone", is_flag=True, help="End the sessions of every user.")
@click.pass_obj
def user_sessions_end(obj: Context, email: str | None, everyone: bool) -> None:
    """End every session of EMAIL (or of everybody with --all): they must log in again."""
    if everyone == (email is not None):
        raise click.UsageError("give EMAIL or --all (one of them)")
    runtime = obj.runtime()
    try:
        with sessions(runtime.database).begin() as session:
            user_id = find_user(session, email).id if email is not None else None
            ended = end_sessions(session, runtime.clock.now(), user_id=user_id)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{ended} session(s) ended")


@main.group()
def apikey() -> None:
    """API keys for /api/v1 (sent as Authorization: Bearer KEY)."""


@apikey.command("create")
@click.argument("name")
@click.pass_obj
def apikey_create(obj: Context, name: str) -> None:
    """Create a key for NAME (the website, the CRM); it is printed once, never stored."""
    runtime = obj.runtime()
    try:
        with sessions(runtime.database).begin() as session:
            row, key = create_key(session, name, runtime.clock.now())
            prefix = row.prefix
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(key)
    click.echo(f"key {prefix}... for {name}: keep it now, it cannot be shown again", err=True)


@apikey.command("list")
@click.pass_obj
def apikey_list(obj: Context) -> None:
    """The keys: prefix, name, created, revoked."""
    runtime = obj.runtime()
    with sessions(runtime.database)() as session:
        for row in session.scalars(select(ApiKey).order_by(ApiKey.id)):
            revoked = f" revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else ""
            click.echo(f"{row.prefix}...  {row.name}  created {row.created_at:%Y-%m-%d}{revoked}")


@apikey.command("revoke")
@click.argument("prefix")
@click.pass_obj
def apikey_revoke(obj: Context, prefix: str) -> None:
    """Revoke the key that starts with PREFIX (as `apikey list` shows it)."""
    runtime = obj.runtime()
    with sessions(runtime.database).begin() as session:
        count = revoke_key(session, prefix.removesuffix("..."), runtime.clock.now())
    if not count:
        raise click.ClickException(f"no live key starts with {prefix}")
    click.echo(f"revoked {count} key(s)")


@main.group()
def segment() -> None:
    """Segments (segments/*.yaml): who is in each, counted by the database."""


def _segment(runtime: Runtime, name: str) -> Segment:
    from nurture.problems import unknown_segment

    found = runtime.project.segments.get(name)
    if found is None:
        raise click.ClickException(unknown_segment(name, runtime.project.segments))
    return found


@segment.command("list")
@click.pass_obj
def segment_list(obj: Context) -> None:
    """Each segment with how many people are in it now."""
    from nurture.segments import audience, count

    runtime = obj.runtime()
    project, now = runtime.project, runtime.clock.now()
    if not project.segments:
        click.echo("no segments: add segments/<name>.yaml (README, Segments)")
        return
    width = max(len(name) for name in project.segments)
    with sessions(runtime.database)() as session:
        for name, found in sorted(project.segments.items()):
            people = count(
                session, audience(session, project.settings, found, project.content_ids(), now)
            )
            click.echo(f"{name:<{width}}  {people:>8}  {found.name}")


@segment.command("show")
@click.argument("name")
@click.option("--count", "count_only", is_flag=True, help="Print only how many are in it.")
@click.option("--page", default=1, show_default=True, type=click.IntRange(1, None))
@click.pass_obj
def segment_show(obj: Context, name: str, count_only: bool, page: int) -> None:
    """The segment's condition, how many are in it, and a page of its people."""
    from nurture.segments import PAGE_SIZE, audience, count
    from nurture.segments import page as page_of

    runtime = obj.runtime()
    project, now = runtime.project, runtime.clock.now()
    found = _segment(runtime, name)
    with sessions(runtime.database)() as session:
        members = audience(session, project.settings, found, project.content_ids(), now)
        people = count(session, members)
        if count_only:
            click.echo(people)
            return
        click.echo(f"{found.name} ({name})")
        if found.description:
            click.echo(found.description)
        click.echo(f"when: {found.when}")
        pages = max(1, -(-people // PAGE_SIZE))
        click.echo(f"{people} people; page {min(page, pages)} of {pages}")
        for contact in page_of(session, members, min(page, pages)):
            click.echo(f"  {contact.email:<40} {contact.stage:<12} fit {contact.fit:>5.1f}")


@segment.command("export")
@click.argument("name")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The CSV file to write.",
)
@click.pass_obj
def segment_export(obj: Context, name: str, output: Path) -> None:
    """Write the segment's people to a CSV file (profile, custom fields, stage, scores)."""
    from nurture.segments import audience, export

    runtime = obj.runtime()
    project, now = runtime.project, runtime.clock.now()
    found = _segment(runtime, name)
    with sessions(runtime.database)() as session, output.open("w", newline="") as out:
        members = audience(session, project.settings, found, project.content_ids(), now)
        written = export(session, members, project.settings, out)
    click.echo(f"wrote {written} people to {output}")


@main.command()
@click.argument("workflow")
@click.option("--segment", "segment_name", help="Default: the segment the workflow enters by.")
@click.option("--dry-run", is_flag=True, help="Say who would enter and when; change nothing.")
@click.pass_obj
def enroll(obj: Context, workflow: str, segment_name: str | None, dry_run: bool) -> None:
    """Enroll the people in a segment now in a workflow (a backfill), paced by the caps:
    not the suppressed, not those already in it, not those its reenter rule keeps out."""
    from nurture.audiences import AudienceError, schedule_lines, summary
    from nurture.audiences import enroll as enroll_segment

    runtime = obj.runtime()
    try:
        done = enroll_segment(
            runtime.database,
            runtime.project,
            workflow,
            segment_name,
            runtime.clock.now(),
            dry_run=dry_run,
        )
    except AudienceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary(done))
    for line in schedule_lines(done, runtime.project.settings.timezone):
        click.echo(line)
    if dry_run:
        click.echo("dry run: nothing changed")


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Context) -> None:
    """Apply the migrations (SQLite or PostgreSQL)."""
    project = obj.project()
    url = database_url(project, obj.database)
    upgrade(make_engine(url))
    click.echo(f"database up to date: {redact_text(url)}")


@main.group()
def contact() -> None:
    """Contacts."""


@contact.command("add")
@click.argument("email")
@click.argument("fields", nargs=-1)
@click.option("--stage", help="Set the stage (e.g. lead for someone who asked for content).")
@click.option("--consent", "consent_source", help="Where and how consent was given.")
@click.pass_obj
def contact_add(
    obj: Context, email: str, fields: tuple[str, ...], stage: str | None, consent_source: str | None
) -> None:
    """Create or update a contact.

    nurture contact add ana@acme.com first_name=Ana timezone=Europe/Paris --stage lead
    """
    runtime = obj.runtime()
    _report(
        runtime,
        lambda session, now: upsert_contact(
            session,
            runtime.project,
            email,
            _pairs(fields),
            now,
            stage=stage,
            consent_source=consent_source,
        ),
    )


@contact.command("stage")
@click.argument("email")
@click.argument("stage")
@click.option("--reason", required=True, help="Why (kept in the stage history).")
@click.pass_obj
def contact_stage(obj: Context, email: str, stage: str, reason: str) -> None:
    """Move a contact to a stage by hand, up or down: nurture contact stage ana@acme.com lead
    --reason "no budget this year" """
    runtime = obj.runtime()
    _report(
        runtime,
        lambda session, now: move_stage(session, runtime.project, email, stage, reason, now),
    )


@contact.command("sales")
@click.argument("email")
@click.argument("outcome", type=click.Choice(["accepted", "rejected"]))
@click.option("--reason", default="", help="Why (required for a rejection).")
@click.pass_obj
def contact_sales(obj: Context, email: str, outcome: str, reason: str) -> None:
    """Sales accepts a handed-off lead, or rejects it (it goes back to nurture)."""
    runtime = obj.runtime()
    _report(
        runtime,
        lambda session, now: sales_outcome(
            session, runtime.project, email, outcome == "accepted", reason, now
        ),
    )


@contact.command("caps")
@click.argument("email")
@click.argument("values", nargs=-1)
@click.option("--clear", is_flag=True, help="Forget this person's own caps first.")
@click.pass_obj
def contact_caps(obj: Context, email: str, values: tuple[str, ...], clear: bool) -> None:
    """Set a person's own caps, e.g. per_week=1 quiet_hours=18:00-09:00 weekdays=tue,thu."""
    runtime = obj.runtime()
    parsed: dict[str, Any] = {}
    for key, value in _pairs(values).items():
        parsed[key] = (
            value.split(",") if key == "weekdays" else (None if value == "none" else value)
        )
    try:
        with sessions(runtime.database).begin() as session:
            if clear:
                found = session.scalar(
                    select(Contact).where(Contact.email == normalize_email(email))
                )
                if found is not None:
                    found.caps = None
            person = set_caps(session, runtime.project, email, parsed, runtime.clock.now())
            caps = person.caps
    except (ValueError, UnknownContact) as exc:
        raise click.ClickException(str(exc)) from None
    shown = ", ".join(f"{k}={v}" for k, v in (caps or {}).items()) or "the project's"
    click.echo(f"{email}: own caps {shown}")


@main.command()
@click.argument("email")
@click.option(
    "--reason",
    default="do_not_contact",
    show_default=True,
    type=click.Choice(["do_not_contact", "unsubscribed", "hard_bounced", "complained"]),
)
@click.option("--source", default="by hand", show_default=True, help="Who or what asked for it.")
@click.pass_obj
def suppress(obj: Context, email: str, reason: str, source: str) -> None:
    """Never send marketing email to this address again (whatever any workflow says)."""
    runtime = obj.runtime()
    try:
        with sessions(runtime.database).begin() as session:
            suppress_address(session, email, reason, source, runtime.clock.now())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{normalize_email(email)}: suppressed ({reason})")


@main.group(invoke_without_command=True)
@click.option(
    "--status",
    default=None,
    type=click.Choice(MESSAGE_STATUSES),
    help="List the messages in this status (without it: how many are in each).",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
def messages(ctx: click.Context, status: str | None, limit: int) -> None:
    """How many messages are in each status, then the `unknown` ones (they wait for a person
    to settle them: nurture messages settle); --status lists the messages in one status."""
    if ctx.invoked_subcommand is not None:
        return
    from nurture.models import UNKNOWN, Message

    runtime = ctx.obj.runtime()
    if status is None:
        with sessions(runtime.database)() as session:
            counts = dict(
                session.execute(select(Message.status, func.count()).group_by(Message.status)).all()
            )
        for name in (*MESSAGE_STATUSES, *sorted(set(counts) - set(MESSAGE_STATUSES))):
            click.echo(f"{name}\t{counts.get(name, 0)}")
        if not counts.get(UNKNOWN):
            return
        click.echo("unknown, to settle:")
        status = UNKNOWN
    with sessions(runtime.database)() as session:
        rows = session.execute(
            select(Message.id, Contact.email, Message.content_id, Message.created_at, Message.error)
            .join(Contact, Contact.id == Message.contact_id)
            .where(Message.status == status)
            .order_by(Message.created_at, Message.id)
            .limit(limit)
        ).all()
    for row in rows:
        note = f"  ({row.error})" if row.error else ""
        click.echo(
            f"{row.id}\t{row.created_at:%Y-%m-%d %H:%M}Z\t{row.email}\t{row.content_id}{note}"
        )
    click.echo(f"{len(rows)} {status}", err=True)


@messages.command("settle")
@click.argument("message_id", type=int)
@click.option("--sent", "outcome", flag_value="sent", help="It did go: count it as sent.")
@click.option("--release", "outcome", flag_value="release", help="It did not: send it now.")
@click.pass_obj
def messages_settle(obj: Context, message_id: int, outcome: str | None) -> None:
    """Decide what an `unknown` message (its sender stopped mid-conversation) becomes."""
    if outcome is None:
        raise click.UsageError("say --sent or --release")
    runtime = obj.runtime()
    if not runtime.dispatcher.settle(message_id, sent=outcome == "sent"):
        raise click.ClickException(f"message {message_id} is not unknown; nothing changed")
    click.echo(
        f"message {message_id}: {'marked sent' if outcome == 'sent' else 'released and sent'}"
    )


@main.command()
@click.argument("email")
@click.pass_obj
def explain(obj: Context, email: str) -> None:
    """Say what a person will receive next, when, and what holds it."""
    from nurture.explain import explain as explain_contact

    runtime = obj.runtime()
    try:
        lines = explain_contact(runtime, email)
    except (ValueError, UnknownContact) as exc:
        raise click.ClickException(str(exc)) from None
    for line in lines:
        click.echo(line)


@main.command()
@click.argument("email")
@click.argument("kind")
@click.argument("properties", nargs=-1)
@click.option(
    "--at", "at", type=AT, help="When it happened (UTC unless an offset is given); default: now."
)
@click.pass_obj
def event(
    obj: Context, email: str, kind: str, properties: tuple[str, ...], at: datetime | None
) -> None:
    """Record an engagement event: nurture event ana@acme.com page_visited url=/pricing"""
    runtime = obj.runtime()
    occurred_at = as_utc(at) if at else None
    if occurred_at is not None:
        found = eventtime.problem(occurred_at, runtime.clock.now())
        if found is not None:
            raise click.BadParameter(f"{at:%Y-%m-%dT%H:%M:%S} {found}", param_hint="--at")
    _report(
        runtime,
        lambda session, now: record_event(
            session,
            runtime.project,
            email,
            kind,
            now,
            occurred_at=occurred_at,
            properties=_pairs(properties),
        ),
    )


def _report(runtime: Runtime, change: Callable[[Session, datetime], Outcome]) -> None:
    """Apply one change in a transaction, then say what it did."""
    try:
        with sessions(runtime.database).begin() as session:
            outcome = change(session, runtime.clock.now())
            found = outcome.contact
            summary = (
                f"{found.email}: stage {found.stage}, fit {found.fit:g}, "
                f"engagement {found.engagement:.1f}"
            )
    except (ValueError, UnknownContact) as exc:
        raise click.ClickException(str(exc)) from None
    for item in outcome.changes:
        click.echo(f"  {item.points:+g} engagement: {item.rule}")
    for move in outcome.moves:
        click.echo(f"  stage -> {move.to_stage}: {move.reason}")
    for ended in outcome.ended:
        click.echo(f"  ended {ended}")
    for workflow in outcome.enrolled:
        click.echo(f"  entered {workflow}")
    for workflow in outcome.held_out:
        click.echo(f"  entered {workflow}, held out (its holdout group: never emailed by it)")
    click.echo(summary)


@main.command()
@click.argument("content_id")
@click.option("--contact", "email", help="Render for this contact (default: a sample contact).")
@click.option(
    "--language", help="The sample contact's language (e.g. fr); a --contact has their own."
)
@click.option("--text", is_flag=True, help="Print the plain-text part instead of the HTML.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file."
)
@click.pass_obj
def preview(
    obj: Context,
    content_id: str,
    email: str | None,
    language: str | None,
    text: bool,
    output: Path | None,
) -> None:
    """Render one piece (e.g. discovery/onboarding-checklist) exactly as the engine would."""
    project = obj.project()
    piece = project.content.get(content_id)
    if piece is None:
        raise click.ClickException(
            f"unknown content {content_id!r}; known: {', '.join(sorted(project.content))}"
        )
    contact = sample_contact(project.settings.custom_fields, language)
    if email:
        from nurture.contacts import profile

        if language:
            raise click.ClickException("--language is for the sample; a contact has their own")
        runtime = obj.runtime()
        with sessions(runtime.database)() as session:
            found = session.query(Contact).filter_by(email=normalize_email(email)).one_or_none()
            if found is None:
                raise click.ClickException(f"no contact {email}")
            contact = profile(found, project.settings)
    unsubscribe = preview_unsubscribe_url(project.settings.base_url)
    rendered = render_email(piece, contact, project.settings.sender.model_dump(), unsubscribe)
    body = rendered.text if text else rendered.html
    if output:
        output.write_text(body, encoding="utf-8")
        click.echo(f"{rendered.subject}\n-> {output}")
    else:
        click.echo(f"Subject: {rendered.subject}\n\n{body}")


@main.command()
@click.option("--days", default=60, show_default=True, type=click.IntRange(1, 3650))
@click.option("--contacts", default=300, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--export",
    "export_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write one JSON line per email sent and per stage move.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option(
    "--persona",
    "persona_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Rehearse one imagined person (a YAML file) and print their timeline day by day.",
)
@click.option(
    "--db",
    "sim_database",
    help="Fresh database for the run (default: simulation-SEED.db; a SQLite file is replaced).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Go on with the simulation in --db from where its clock stopped, for --days more "
    "(new people arrive at its earlier pace unless --contacts is given).",
)
@click.pass_context
def simulate(
    ctx: click.Context,
    days: int,
    contacts: int,
    seed: int,
    export_path: Path | None,
    as_json: bool,
    sim_database: str | None,
    persona_path: Path | None,
    resume: bool,
) -> None:
    """Live a synthetic population (or one --persona) through the real engine, on a
    simulated clock."""
    from nurture.simulate import NothingToResume
    from nurture.simulate import simulate as run_simulation

    obj: Context = ctx.obj
    obj.project()
    if persona_path is not None:
        from nurture.rehearse import load_persona, rehearse

        persona = _or_exit(lambda: load_persona(persona_path))
        for line in rehearse(obj.root, persona):
            click.echo(line)
        return
    database = sim_database or obj.database or str(Path(obj.root) / f"simulation-{seed}.db")
    if resume:
        if "://" not in database and not Path(database).is_file():
            raise click.BadParameter(f"no database {database} to resume", param_hint="--db")
    elif "://" not in database:
        for suffix in ("", "-wal", "-shm"):
            Path(database + suffix).unlink(missing_ok=True)
    given = ctx.get_parameter_source("contacts") is not click.core.ParameterSource.DEFAULT
    handle = export_path.open("w", encoding="utf-8") if export_path else None
    try:
        with _days_bar(days, "simulating", quiet=as_json) as advance:
            result = run_simulation(
                obj.root,
                days=days,
                contacts=contacts if given or not resume else None,
                seed=seed,
                database=database,
                export=handle,
                resume=resume,
                progress=advance,
            )
    except NothingToResume as exc:
        raise click.BadParameter(str(exc), param_hint="--db") from None
    finally:
        if handle:
            handle.close()
    if as_json:
        click.echo(json.dumps(result.as_dict(), sort_keys=True))
    else:
        click.echo(
            f"{result.contacts} {'new ' if resume else ''}contacts over {days} simulated days "
            f"(seed {result.seed}{', resumed' if resume else ''}), database {database}"
        )
        if resume:
            click.echo(
                "stages, emails and deferrals below: totals in the database, since the "
                "simulation began"
            )
        click.echo("stages:   " + "  ".join(f"{k} {v}" for k, v in result.stages.items()))
        click.echo(
            "emails:   " + "  ".join(f"{k} {v}" for k, v in result.messages_by_phase.items())
        )
        click.echo(
            "deferred: "
            + ("  ".join(f"{k} {v}" for k, v in sorted(result.deferrals.items())) or "none")
        )
        click.echo(
            "opened:   median hours from sending to the first real open: "
            + "  ".join(
                f"{k} {v if v is not None else '-'}" for k, v in result.hours_to_open.items()
            )
        )
        click.echo(
            f"send time: {result.send_time['emails']} emails at the person's best hour, "
            f"{result.send_time['at_their_hour']} of them at the hour they read their mail"
        )
        click.echo(f"violations: {len(result.violations)}")
        for line in result.violations[:20]:
            click.echo(f"  {line}")
    if result.violations:
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
