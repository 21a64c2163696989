"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the person running the suite: a config key, a path, a file.

    The message is a single line that names the offending key or path and, where there is a
    finite set, the valid choices. The CLI prints it without a traceback and exits with status 2.
    """


def choices_error(key: str, value: object, valid: list[str] | tuple[str, ...]) -> UserError:
    """The standard 'unknown name' error: names the key, the bad value and the valid choices."""
    return UserError(f"{key}={value!r} is not one of: {', '.join(sorted(valid))}")
