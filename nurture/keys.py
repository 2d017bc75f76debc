"""The secret that signs links: from NURTURE_SECRET_KEY, or made once per project and kept."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from nurture import environment

ENV_VAR = environment.SECRET_KEY


def secret_key(instance_dir: Path) -> str:
    """The project's signing secret; never a built-in default."""
    from_env = environment.read(ENV_VAR)
    if from_env:
        if len(from_env) < 32:
            raise ValueError(f"{ENV_VAR} must be at least 32 characters")
        return from_env
    path = instance_dir / "secret_key"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    instance_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key
