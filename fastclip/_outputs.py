"""Output files of the ``fastclip`` command: checked before a long run, written whole or not at all."""

import importlib.util
import os


def check_output(prog, option, path, suffix=None):
    """Exits with a message naming ``option`` if ``path`` cannot be written, before any work is done."""
    if path is None:
        return
    if not path.strip():
        raise SystemExit(f"{prog}: {option} needs a file name, got an empty one")
    if suffix is not None and not path.lower().endswith(suffix):
        raise SystemExit(f"{prog}: {option} must name a {suffix} file, got {path!r}")
    if os.path.isdir(path):
        raise SystemExit(f"{prog}: {option} {path!r} is a folder, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SystemExit(f"{prog}: {option} {path!r}: the folder {folder!r} does not exist")
    probe = _temporary_name(path)
    try:
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise SystemExit(f"{prog}: {option} {path!r}: cannot write in {folder!r} ({e.strerror})") from None


def check_matplotlib(prog, option):
    """Exits with an install hint if ``option`` asks for a plot and matplotlib is missing."""
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
