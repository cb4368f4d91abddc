"""The errors that end a training run because the user must fix something, not the code.

``nvc_train.cli.run_task`` prints them as one ``error: ...`` message with no traceback and exits
with status 1; any other exception is a bug and keeps its traceback. This module imports nothing,
so the CLI can name these types on its error path without pulling in Lightning.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot go on, or its result cannot be trusted, and the message says what to change.

    Raised for a run that made no optimisation step, a run whose loss or weights are no longer
    finite, too many skipped steps, or config values that were never set.
    """


class MissingDataError(TrainingError, FileNotFoundError):
    """A data set's root, list file or clips are not where the config says.

    Also a :class:`FileNotFoundError`, so code (and tests) that catch the built-in type keep
    working; the message names the path looked at and the layout expected.
    """
