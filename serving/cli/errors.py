"""How every command line of the kit ends on bad input or a failed run: one ``error: …`` line on
stderr and a non-zero exit, never a traceback. Used by ``serving``, ``loadtest`` and ``bench``.

Exit codes: 2 for input the command refuses (a field, a file, a flag), 1 for a run that failed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

BAD_INPUT = 2
FAILED = 1


def fail(message: object, code: int = BAD_INPUT) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code) from None


def exits_on(*kinds: type[BaseException], code: int = BAD_INPUT) -> Callable[[F], F]:
    """A decorator: these exceptions, raised by the command, end it through :func:`fail`."""

    def decorate(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except kinds as exc:
                fail(exc, code)

        return wrapper  # type: ignore[return-value]

    return decorate
