"""Files only the router's user may read: the task history, and the API keys kept beside it.

SQLite creates a database with the process umask (usually world-readable) and gives
its ``-wal``, ``-shm`` and ``-journal`` files the database file's own mode. So the
database is created 0600 *before* SQLite opens it, and its siblings then follow; a
file left wider by an older version is tightened, with a log line saying so.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("serve_app")

#: the files SQLite keeps beside a database, each created with the database file's mode
SQLITE_SIBLINGS = ("-wal", "-shm", "-journal")


def private_file(path: str | Path) -> Path:
    """Create ``path`` (empty, mode 0600, parent folders as needed) unless it exists, and
    take group and other permissions off it and any SQLite sibling of it that exists.

    Call before ``sqlite3.connect(path)``; an empty file is a valid SQLite database.
    Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: create it ourselves with 0600 (the umask can only take bits away), or find it
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for p in (path, *(path.with_name(path.name + s) for s in SQLITE_SIBLINGS)):
        try:
            mode = stat.S_IMODE(p.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(p, mode & 0o700)
            log.warning("%s was readable by others (mode %o): now %o", p, mode, mode & 0o700)
    return path
