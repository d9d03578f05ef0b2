"""What the ``fastclip`` command's subcommands share: how a bad command-line value is reported.

Two kinds of failure, as argparse has them:

* a bad command-line value (out of range, a path that cannot be written, a device this machine
  does not have): a *usage error*. The check raises :class:`UsageError`; :func:`run_parsed` turns
  it into the parser's own error, so it looks like argparse's (``usage: ...`` then
  ``fastclip demo: error: --steps must be >= 10, got 3``) and exits with status 2;
* the run itself failing (not enough memory for a suite, matplotlib missing, out of memory on the
  device): ``SystemExit("fastclip bench: ...")``, a message on stderr and exit status 1, no usage.
"""

__all__ = ["UsageError", "run_parsed"]


class UsageError(SystemExit):
    """A bad command-line value, ``message`` naming the option (``"--steps must be >= 10, got 3"``).

    :func:`run_parsed` reports it through the parser (usage line, ``<prog>: error: <message>``,
    exit status 2). It is a ``SystemExit``, so code that calls a subcommand's ``run()`` without a
    parser still ends as before: ``"<prog>: <message>"`` on stderr, exit status 1.
    """

    def __init__(self, prog: str, message: str):
        super().__init__(f"{prog}: {message}")
        self.prog, self.message = prog, message


def run_parsed(parser, run, args):
    """``run(args)``, a :class:`UsageError` becoming ``parser.error`` (usage, message, exit 2)."""
    try:
        return run(args)
    except UsageError as e:
        parser.error(e.message)
