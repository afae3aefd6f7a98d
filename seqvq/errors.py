"""The one exception class for mistakes in what the user gave seqvq (configs, data, paths).

It is raised where the fault is found, with a one-line message ``<file or key>: <what>; <what to do>``. The
``seqvq`` command line prints it as ``error: <message>`` and exits 1 (``--debug`` or ``SEQVQ_DEBUG=1`` shows the
traceback); every other exception is a bug in seqvq and keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """A user mistake; ``str(error)`` is the one line the command line prints after ``error: ``."""
