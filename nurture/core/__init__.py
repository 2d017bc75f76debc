"""The pure core: the modules that decide, from plain data and an explicit `now`.

The rule: a module of `nurture.core` does no I/O and reads no clock. It imports none of
sqlalchemy, alembic, flask, werkzeug, apscheduler, smtplib, os or time, asks `datetime`
and `date` for no current instant, and does not import `nurture.clock`;
nor does any module outside the core that it imports (`nurture.config`,
`nurture.workflows`, `nurture.expressions`...). The caller loads what a decision needs,
passes `now`, and writes the result. tests/test_core.py walks every module here and holds
them to it.

Here: the event rules (`eventrules`), scores and decay (`scoring`), stage moves (`stages`),
the caps (`pacing`), the send-time choice (`sendtime`), the next step (`planner`), what an
enrollment does next (`decisions`), journey conditions (`engagement`), moving people across
workflow edits (`versions`), holdout assignment (`holdouts`), subject-test winners
(`winner`), machine opens and clicks (`machines`), when an event may say it happened
(`eventtime`), accounts (`accounts`), login throttling (`throttle`) and counts in words
(`words`).
"""
