"""The HS256 signing secret of the embedded run: generated once, kept in ``<data dir>/secret``.

Keeping it on disk means tokens printed by one run still work after a restart. The file is created with
mode 0600 and lives under the data directory, which .gitignore excludes, so it is never committed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_BYTES = 48


def load_or_create_secret(path: Path) -> str:
    """The secret stored at ``path``; a new random one is written there first if the file does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
        if not secret:
            raise RuntimeError(f"{path} is empty; delete it to generate a new JWT secret") from None
        return secret
    secret = secrets.token_urlsafe(SECRET_BYTES)
    with os.fdopen(descriptor, "w") as secret_file:
        secret_file.write(secret + "\n")
    return secret
