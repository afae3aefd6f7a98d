"""The one exception class for mistakes in what the user gave seqvq (configs, data, paths).

It is raised where the fault is found, with a one-line message ``<file or key>: <what>; <what to do>``. The
``seqvq`` command line prints it as ``error: <message>`` and exits 1 (``--debug`` or ``SEQVQ_DEBUG=1`` shows the
traceback); every other exception is a bug in seqvq and keeps its traceback. Ctrl-C is not an error: the
command line prints one line (an :class:`Interrupted`'s message where the run says where it stopped) and exits 130.
"""
from __future__ import annotations


class UserError(ValueError):
    """A user mistake; ``str(error)`` is the one line the command line prints after ``error: ``."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``str(error)`` is the one line the command line prints instead of a traceback (where
    the run stopped and how to go on)."""
