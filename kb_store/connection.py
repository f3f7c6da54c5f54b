"""Opening the DuckDB file, with clear errors, and transactions."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)


class KnowledgeBaseError(RuntimeError):
    """Base class of the knowledge base's errors."""


class DatabaseLockedError(KnowledgeBaseError):
    """Another process holds the database file."""


class DatabaseMissingError(KnowledgeBaseError):
    """A read-only open of a file that does not exist."""


_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.+?) \(PID (?P<pid>\d+)\)")


def connect(path: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the knowledge base file, turning DuckDB's lock error into a clear one.

    DuckDB allows one writing process per file; readers may share a file only among
    themselves.
    """
    path = Path(path).expanduser()
    if read_only and not path.exists():
        raise DatabaseMissingError(
            f"knowledge base {path} does not exist; create it with 'ked knowledge import-pack' "
            "or point KED_DB / --db at an existing file"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        match = _HOLDER.search(str(exc))
        if match is None and "lock" not in str(exc).lower():
            raise
        holder = f" by process {match['pid']} ({match['exe']})" if match else ""
        raise DatabaseLockedError(
            f"knowledge base {path} is locked{holder}: DuckDB allows one writing process "
            "at a time. Wait for that process to finish, or use another --db file."
        ) from None


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Run a block in one transaction: all of its writes land, or none."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
