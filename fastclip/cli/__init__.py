"""The ``fastclip`` command (``fastclip bench``, ``fastclip demo``, ``fastclip info``) and the
benchmark harness it shares with the scripts in ``bench/``, kept out of the library: importing
:mod:`fastclip` imports none of it.

* :mod:`~fastclip.cli.command`: the argument parser, ``fastclip info``, ``--version``, usage
  errors (exit status 2) and ``--device``; :mod:`~fastclip.cli.outputs`: output files, checked
  before a run and written whole or not at all.
* :mod:`~fastclip.cli.bench` (the suites of ``fastclip bench``), :mod:`~fastclip.cli.overhead`
  (its many-tiny suite: host time per call) and :mod:`~fastclip.cli.demo`.
* The harness, a module per job: :mod:`~fastclip.cli.grads` (realistic grads and the parameters
  holding them), :mod:`~fastclip.cli.timing` (the one timing loop: interleaved rounds, medians),
  :mod:`~fastclip.cli.ceilings` (memory ceilings and floors), :mod:`~fastclip.cli.machine` (what
  the report says about the machine), :mod:`~fastclip.cli.progress` (the progress bar) and
  :mod:`~fastclip.cli.reports` (tables, JSON, CSV).
"""

from .command import main

__all__ = ["main"]
