"""Opening the DuckDB file, with clear errors, transactions, and read-only sharing."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

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


class ReadOnlyError(KnowledgeBaseError):
    """A job holding the knowledge base read-only found something it must write (a text to
    embed, knowledge to generate); `read_or_write` then opens it for writing."""


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


class _Closable(Protocol):
    def close(self) -> None: ...


Handle = TypeVar("Handle", bound=_Closable)
Result = TypeVar("Result")


def read_or_write(
    open_kb: Callable[[bool], Handle], work: Callable[[Handle], Result], *, what: str = "job"
) -> Result:
    """``work`` on the knowledge base opened read-only (``open_kb(True)``), so that other jobs
    and ``ked kb list`` can read it at the same time; opened for writing (``open_kb(False)``)
    only when ``work`` raises `ReadOnlyError` (something must be embedded or generated), or
    when the read-only open fails for a reason a writer fixes (no file yet, an older schema).
    ``work`` runs again from the start then, so it must not have side effects before writing.
    """
    try:
        handle = open_kb(True)
    except DatabaseLockedError:
        raise
    except KnowledgeBaseError as exc:
        log.warning("the %s opens the knowledge base for writing: %s", what, exc)
    else:
        with closing(handle):
            try:
                return work(handle)
            except ReadOnlyError as exc:
                log.warning(
                    "the %s opens the knowledge base for writing (%s); other jobs cannot use "
                    "it until this one is done with it",
                    what,
                    exc,
                )
    with closing(open_kb(False)) as handle:
        return work(handle)
