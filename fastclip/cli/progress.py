"""The progress bar of ``fastclip bench``, ``fastclip demo`` and the scripts in ``bench/``: one bar
over a whole run, on stderr."""

import shutil
import sys
import time
from collections.abc import Sequence

__all__ = ["Progress"]


class Progress:
    """One progress bar over a whole run, on stderr: one step per :meth:`__call__`.

    A run made of stages (the suites of ``fastclip bench``, the runs of ``fastclip demo``) gives
    their names as ``stages`` and starts each with :meth:`stage`: each stage fills an equal share
    of the bar, so the bar only moves forward, although a stage learns its own number of steps
    only when it starts (:meth:`add` grows the current stage's total, e.g. once a case knows how
    many methods it warms up). The line shows the percentage, the time since the start, which
    stage of how many, and the message: ``[#########.....]  45%  0:12  suite 2/3 many-small:
    round 3/5``. On a terminal the line is redrawn in place; elsewhere (a log, a pipe) a line is
    written when a stage starts or ends and at most every ``interval`` seconds in between.
    :meth:`note` writes a line that stays, above the bar.
    """

    def __init__(
        self,
        total: int = 0,
        stages: Sequence[str] | None = None,
        noun: str = "stage",
        interval: float = 2.0,
        stream=None,
    ):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.stages, self.noun, self.interval = list(stages or []), noun, interval
        self.index = -1 if self.stages else 0  # the current stage
        self.done, self.total = 0, total  # steps of the current stage
        self.shown = 0.0  # the fraction drawn last: never drawn smaller
        self.start = self._last_line = time.monotonic()
        self._line = ""

    def stage(self, name: str | None = None, steps: int = 0) -> None:
        """Starts the next stage (``name`` defaults to the next of ``stages``), of ``steps`` steps."""
        self.index += 1
        if name is not None and self.index < len(self.stages):
            self.stages[self.index] = name
        self.done, self.total = 0, steps
        self._draw(f"{self.stages[self.index]}: starting" if self.index < len(self.stages) else "starting", force=True)

    def add(self, steps: int) -> None:
        """Adds ``steps`` to the current stage's total."""
        self.total += steps

    def __call__(self, message: str) -> None:
        """One step done, shown with ``message``."""
        self.done += 1
        self._draw(message, force=self.done == 1 or self.done >= self.total)

    def note(self, text: str) -> None:
        """A line that stays (above the bar, on a terminal)."""
        if self.tty and self._line:
            print("\r" + " " * len(self._line) + "\r" + text, file=self.stream)
            print(self._line, end="", file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)

    def fraction(self) -> float:
        """How much of the run is done, 0 to 1 (never less than what was shown before)."""
        within = min(self.done / self.total, 1.0) if self.total else 0.0
        if self.stages:
            self.shown = max(self.shown, (max(self.index, 0) + within) / len(self.stages))
        else:
            self.shown = max(self.shown, within)
        return min(self.shown, 1.0)

    def _draw(self, message, force=False):
        now = time.monotonic()
        fraction = self.fraction()
        filled = int(30 * fraction)
        elapsed = int(now - self.start)
        where = f"{self.noun} {self.index + 1}/{len(self.stages)} " if self.stages and self.index >= 0 else ""
        line = (
            f"[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%}  {elapsed // 60}:{elapsed % 60:02d}  "
            f"{where}{message}"
        )
        if self.tty:
            width = max(40, shutil.get_terminal_size().columns - 1)
            line = line[:width]
            print("\r" + line.ljust(len(self._line)), end="", file=self.stream, flush=True)
            self._line = line
        elif force or now - self._last_line >= self.interval:
            print(line, file=self.stream, flush=True)
            self._last_line = now

    def close(self) -> None:
        """Ends the bar's line (on a terminal)."""
        if self.tty and self._line:
            print(file=self.stream, flush=True)
            self._line = ""
