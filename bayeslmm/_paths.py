"""Output paths checked before the work that fills them.

A command that samples for minutes must not find out at the end that it cannot write its
result: :func:`check_file` and :func:`check_dir` are called first and raise an
:class:`~bayeslmm.OptionError` with one line that says what is wrong. They create nothing
(a probe file is created and removed at once), so a check cannot leave an empty file or folder
behind. Writable is tested by writing, not with ``os.access``, which a superuser always passes.
"""

from __future__ import annotations

import os
import tempfile

from ._errors import OptionError


def _probe(folder: str) -> str | None:
    """None if a file can be created in ``folder``, else the reason."""
    try:
        fd, name = tempfile.mkstemp(prefix=".bayeslmm-probe-", dir=folder)
    except OSError as e:
        return e.strerror or type(e).__name__
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass
    return None


def _existing_ancestor(path: str) -> tuple[str, list[str]]:
    """The nearest existing ancestor of ``path`` (absolute), and the components below it to create."""
    head = os.path.abspath(path)
    missing: list[str] = []
    while not os.path.exists(head):
        parent = os.path.dirname(head)
        missing.append(os.path.basename(head))
        if parent == head:
            break
        head = parent
    return head, missing[::-1]


def check_file(path: str | os.PathLike[str], option: str, example: str = "out") -> None:
    """``path`` can be written as a file: not a directory, in an existing writable folder.

    Raises
    ------
    OptionError
        Naming ``option`` (e.g. ``--out``) and what is wrong.
    """
    p = os.fspath(path)
    if not p or p.endswith(("/", os.sep)):
        raise OptionError(f"{option} {p!r} must be a file name, not a folder")
    if os.path.isdir(p):
        raise OptionError(f"{option} {p!r} is a directory; give a file name, e.g. {os.path.join(p, example)!r}")
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.exists(folder):
        head, _ = _existing_ancestor(folder)
        if not os.path.isdir(head):
            raise OptionError(f"{option} {p!r}: {head!r} is not a directory")
        raise OptionError(
            f"{option} {p!r}: the folder {os.path.dirname(p) or folder!r} does not exist; create it first"
        )
    if not os.path.isdir(folder):
        raise OptionError(f"{option} {p!r}: {folder!r} is not a directory")
    if os.path.exists(p):
        try:
            with open(p, "ab"):
                pass
        except OSError as e:
            raise OptionError(f"{option} {p!r} cannot be written: {e.strerror}") from None
        return
    why = _probe(folder)
    if why is not None:
        raise OptionError(f"{option} {p!r}: cannot write in the folder {folder!r}: {why}")


def check_dir(path: str | os.PathLike[str], option: str, files: tuple[str, ...] = ()) -> None:
    """``path`` is a writable folder, or one that can be created; ``files`` in it are not folders.

    Raises
    ------
    OptionError
        Naming ``option`` and what is wrong.
    """
    p = os.fspath(path)
    if not p:
        raise OptionError(f"{option} must name a folder")
    if os.path.exists(p):
        if not os.path.isdir(p):
            raise OptionError(f"{option} {p!r} is a file, not a folder")
        for f in files:
            if os.path.isdir(os.path.join(p, f)):
                raise OptionError(
                    f"{option} {p!r}: {os.path.join(p, f)!r} is a directory, and a file of that "
                    "name is to be written there"
                )
        why = _probe(p)
        if why is not None:
            raise OptionError(f"{option} {p!r}: cannot write in this folder: {why}")
        return
    head, _ = _existing_ancestor(p)
    if not os.path.isdir(head):
        raise OptionError(f"{option} {p!r} cannot be created: {head!r} is not a directory")
    why = _probe(head)
    if why is not None:
        raise OptionError(f"{option} {p!r} cannot be created in {head!r}: {why}")
