"""The web part for a WSGI server, without the scheduler (run `nurture worker` for that):

    NURTURE_PROJECT=/srv/keel NURTURE_DATABASE_URL=postgresql://... \\
        gunicorn -w 4 -b 0.0.0.0:8000 'nurture.wsgi:app'
"""

from __future__ import annotations

from pathlib import Path

from nurture import environment
from nurture.logs import LEVEL_ENV, setup
from nurture.runtime import open_runtime
from nurture.web import create_app

setup(environment.read(LEVEL_ENV, "info"))  # NURTURE_LOG_FORMAT=json for JSON lines
app = create_app(open_runtime(Path(environment.read(environment.PROJECT, ".")), migrate=False))
