"""Progress files on disk: paths checked, crash-safe replacement, strict UTF-8 reading.

A progress file is the only record of what a long migration already did, so a save must never
leave it half-written: the new text goes to a temporary file in the same directory, is flushed
to disk, and then atomically renamed over the old file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterable, Iterator

from ..errors import LedgerFileError, ProgressFormatError


def checked_path(path: str | os.PathLike[str]) -> str:
    """``path`` as text; an empty one (an unset shell variable) is refused, not a temporary
    database that vanishes with the run."""
    text = os.fspath(path)
    if not text:
        raise LedgerFileError("the progress ledger path is empty (an unset shell variable?): "
                              "name a file, e.g. progress.db")
    return text


@contextlib.contextmanager
def read_errors_named(location: str, errors: type[Exception] | tuple[type[Exception], ...]) -> Iterator[None]:
    """The database's ``errors`` met reading the ledger at ``location`` (a damaged file, a
    server gone) as one line naming it (:class:`LedgerFileError`)."""
    try:
        yield
    except errors as exc:
        raise LedgerFileError(f"cannot read progress ledger {location}: {exc}") from exc


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_location(location: object) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (a str; a path never is one): the
    progress is a PostgreSQL ledger (:mod:`ferryman.progress.postgres`, imported only then)."""
    return isinstance(location, str) and location.lower().startswith(POSTGRES_SCHEMES)


def save_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Replace the file at ``path`` with ``text`` (UTF-8) so that a crash leaves old or new.

    Raises:
        OSError: one line naming ``path`` (its type follows the errno, e.g. ``PermissionError``);
            the old file is then untouched and no temporary file remains.
    """
    save_chunks_atomically(path, (text,))


def save_chunks_atomically(path: str | os.PathLike[str], chunks: Iterable[str]) -> None:
    """:func:`save_text_atomically` for text made piece by piece (memory: one piece)."""
    target = os.path.realpath(path)  # through a symlink, replace the file it points to
    directory = os.path.dirname(target)
    temp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
    created = False
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        created = True
        with os.fdopen(fd, "wb") as out:
            _keep_mode(target, temp)
            for chunk in chunks:
                out.write(chunk.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException as exc:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        if isinstance(exc, OSError):
            raise _save_error(path, exc) from exc
        raise
    try:
        _fsync_directory(directory)
    except OSError as exc:
        raise _save_error(path, exc) from exc


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of a progress file (a UTF-8 BOM is allowed).

    Raises:
        FileNotFoundError: the file does not exist (callers decide whether that means "fresh").
        ProgressFormatError: the bytes are not UTF-8.
    """
    with open(path, "rb") as file:
        data = file.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        raise ProgressFormatError(message, "$", os.fspath(path)) from None


def _keep_mode(target: str, temp: str) -> None:
    # The new file would otherwise get default permissions, not those the user gave the old one.
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return
    os.chmod(temp, mode)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; directories cannot be opened this way on Windows.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_error(path: str | os.PathLike[str], exc: OSError) -> OSError:
    message = f"cannot save {os.fspath(path)}: {exc.strerror or exc}"
    return OSError(exc.errno, message) if exc.errno is not None else OSError(message)
