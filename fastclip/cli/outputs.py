"""Output files of the ``fastclip`` command: checked before a long run, written whole or not at all."""

import importlib.util
import os

from .command import UsageError

__all__ = ["check_matplotlib", "check_output", "write_atomically"]


def check_output(prog, option, path, suffix=None):
    """Raises a :class:`~fastclip.cli.command.UsageError` naming ``option`` if ``path`` cannot be written,
    before any work is done."""
    if path is None:
        return
    if not path.strip():
        raise UsageError(prog, f"{option} needs a file name, got an empty one")
    if suffix is not None and not path.lower().endswith(suffix):
        raise UsageError(prog, f"{option} must name a {suffix} file, got {path!r}")
    if os.path.isdir(path):
        raise UsageError(prog, f"{option} {path!r} is a folder, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(prog, f"{option} {path!r}: the folder {folder!r} does not exist")
    probe = _temporary_name(path)
    try:
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise UsageError(prog, f"{option} {path!r}: cannot write in {folder!r} ({e.strerror})") from None


def check_matplotlib(prog, option):
    """Exits (status 1: the machine lacks a package, the command line is fine) with an install hint
    if ``option`` asks for a plot and matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise SystemExit(f"{prog}: {option} needs matplotlib (pip install matplotlib)")


def _temporary_name(path):
    return os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")


def write_atomically(path, write):
    """Calls ``write(tmp_path)`` and renames the result over ``path``, so an interrupted or failed
    write never leaves a truncated file where a previous good one was."""
    tmp = _temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
