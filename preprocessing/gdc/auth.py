"""The user's GDC token for controlled files: where it comes from (config, ``$GDC_TOKEN_FILE``,
``$GDC_TOKEN``) and reading it. Kept apart so that messages can name its source without ever
touching the token itself.
"""
from __future__ import annotations

import os
from pathlib import Path

from .core import GDCError

TOKEN_FILE_ENV, TOKEN_ENV = "GDC_TOKEN_FILE", "GDC_TOKEN"


def token_source(token_file: str | os.PathLike | None = None) -> str | None:
    """Where the token comes from, for messages (never the token): the file named in the config,
    else ``$GDC_TOKEN_FILE``, else ``$GDC_TOKEN``; None without one."""
    if token_file:
        return str(token_file)
    if os.environ.get(TOKEN_FILE_ENV):
        return os.environ[TOKEN_FILE_ENV]
    return f"${TOKEN_ENV}" if os.environ.get(TOKEN_ENV) else None


def read_token(token_file: str | os.PathLike | None = None) -> str | None:
    """The GDC token (see :func:`token_source`), stripped; None without one. A named file that
    cannot be read is an error naming it (never its content)."""
    source = token_source(token_file)
    if source is None:
        return None
    if source == f"${TOKEN_ENV}":
        return os.environ[TOKEN_ENV].strip()
    try:
        token = Path(source).read_text().strip()
    except OSError as e:
        raise GDCError(f"GDC token file {source}: cannot be read ({e.strerror})") from None
    if not token:
        raise GDCError(f"GDC token file {source} is empty")
    return token
