"""Errors that are the user's to fix (a config key, a data file), shown without a traceback."""

from __future__ import annotations

import functools
import logging
import numbers
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVar

log = logging.getLogger("seqlab")

F = TypeVar("F", bound=Callable[..., Any])


class UserError(ValueError):
    """Something in the user's config or files; ``str()`` says what and what is allowed."""


class ConfigError(UserError):
    """A config that cannot work; ``str()`` lists every problem, one per line."""

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(problems))


class DataError(UserError):
    """A data file or sample that cannot be used; the message names the file and the sample."""


class WriteError(UserError):
    """A file the run must write that cannot be (a full disk); the message names the path."""


def is_int(value: object) -> TypeGuard[int]:
    """An integer (Python's or numpy's) that is not a bool: YAML's `true` would otherwise pass
    as 1. Hydra reads `1e4` as a float, which this refuses too. Here, below every module that
    checks a count (data, tasks, the config checks), so none imports another for it."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


#: Exit status of a run refused for a user error (as argparse uses for bad arguments).
USER_ERROR_EXIT = 2


def user_error(error: BaseException | None) -> Exception | None:
    """``error`` itself or what it wraps (Hydra's instantiate wraps what constructors raise),
    when it is the user's to fix: a ``UserError`` or a missing file."""
    while error is not None:
        if isinstance(error, (UserError, FileNotFoundError)):
            return error
        error = error.__cause__ or error.__context__
    return None


def exit_on_user_error(main: F) -> F:
    """Wrap an entry point: a ``UserError`` is printed as ``error: <message>`` lines and the
    process exits with status 2, instead of a traceback through Hydra and Lightning."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except Exception as error:
            cause = user_error(error)
            if cause is None:
                raise
            for line in str(cause).splitlines():
                log.error("error: %s", line)
            raise SystemExit(USER_ERROR_EXIT) from None

    return wrapper  # type: ignore[return-value]
