"""Opening the DuckDB file, with clear errors, and transactions."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ked.errors import UserError

log = logging.getLogger(__name__)


class KnowledgeBaseError(UserError, RuntimeError):
    """Base class of the knowledge base's errors."""


class DatabaseLockedError(KnowledgeBaseError):
    """Another process holds the database file."""


class DatabaseMissingError(KnowledgeBaseError):
    """A read-only open of a file that does not exist."""


class DatabaseCorruptError(KnowledgeBaseError):
    """A file that DuckDB cannot open as a database: not one, truncated, or damaged."""


_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.+?) \(PID (?P<pid>\d+)\)")
# DuckDB adds this hint when the holder only reads: a second reader would be let in.
_HOLDER_READS = "would be able to open this database in read-only mode"


def connect(path: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the knowledge base file, turning DuckDB's lock and file errors into clear ones.

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
    except duckdb.Error as exc:
        raise _open_error(path, exc) from exc


def _open_error(path: Path, exc: duckdb.Error) -> KnowledgeBaseError:
    """The clear error for a file DuckDB would not open: locked by whom, or unreadable."""
    message = str(exc)
    match = _HOLDER.search(message)
    if match is None and "Could not set lock" not in message:
        return DatabaseCorruptError(
            f"knowledge base {path} cannot be opened as a DuckDB database "
            f"({message.removeprefix('IO Error: ')}); restore it from a copy or an export "
            "('ked kb export'), or point --db at another file"
        )
    holder = f"process {match['pid']} ({match['exe']})" if match else "another process"
    if _HOLDER_READS in message:
        return DatabaseLockedError(
            f"knowledge base {path} is open for reading by {holder}: DuckDB lets no process "
            "write a file that others are reading. Wait for that reader to finish, or use "
            "another --db file."
        )
    return DatabaseLockedError(
        f"knowledge base {path} is locked by {holder}, which is writing it: DuckDB allows "
        "one writing process at a time. Wait for that process to finish, or use another "
        "--db file."
    )


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
