"""What the project's command lines share (``python -m fia_engine``, ``python -m bench.*``).

- Bad input ends the program with exit code 2 and one line ``error: ...`` on stderr: no
  usage dump, no traceback. That covers argparse's own errors (Parser), the engine's errors
  (FIAError), operating-system errors (a full disk, a missing permission) and Ctrl-C.
  Anything else is a bug and keeps its traceback.
- The default stderr shows the commands' own progress bars and warnings; the notices, warnings
  and info logs of diffusers, transformers, huggingface_hub and torch appear with -v only.

This module imports nothing heavy, so that it can guard the slow imports (torch) too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator

from .errors import FIAError

EXIT_BAD_INPUT = 2
_USER_ERRORS = (KeyboardInterrupt, FIAError, OSError)
_LIBRARIES = ("diffusers", "transformers", "huggingface_hub", "torch", "PIL", "matplotlib")


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (``error: ...``, exit 2), with no usage before it.

    Sub-parsers made by add_subparsers are of the same class.
    """

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {_one_line(message)} (see {self.prog} --help)\n")


def error_line(error: BaseException) -> str:
    """The line (without ``error: ``) that reports one of the errors a user can act on."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, OSError) and not isinstance(error, FIAError):
        reason = error.strerror or str(error) or type(error).__name__
        return _one_line(f"{reason}: {error.filename}" if error.filename else reason)
    return _one_line(str(error))


def run_command(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """``handler(args)``'s exit code (None counts as 0); 2 with one ``error:`` line for a user error."""
    try:
        return handler(args) or 0
    except _USER_ERRORS as error:
        _print_error(error)
        return EXIT_BAD_INPUT


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Around what a ``python -m`` entry point does before and after its command (the slow
    imports, the parsing): a user error or Ctrl-C there also ends in one line and exit code 2."""
    try:
        yield
    except _USER_ERRORS as error:
        _print_error(error)
        raise SystemExit(EXIT_BAD_INPUT) from None


def ratio_arg(name: str) -> Callable[[str], float]:
    """An argparse ``type`` for a fraction in (0, 1] (fia_engine.localize.check_ratio)."""

    def parse(text: str) -> float:
        from .localize import check_ratio

        try:
            return check_ratio(name, float(text))
        except (ValueError, FIAError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def setup_output(
    verbose: bool,
    own_loggers: tuple[str, ...] = ("fia_engine",),
    own_level: int = logging.WARNING,
    log_format: str = "%(name)s: %(message)s",
) -> None:
    """Logging and library noise for a command line run.

    Default: the ``own_loggers`` at ``own_level``, everything else at WARNING; the libraries'
    notices, progress bars and Python warnings off. ``verbose``: the root logger at INFO, the
    libraries at their own defaults (notices, warnings and progress bars on).
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=log_format)
    if verbose:
        return
    if own_level != logging.WARNING:  # otherwise they follow the root logger's level
        for name in own_loggers:
            logging.getLogger(name).setLevel(own_level)
    # Read when the libraries are imported (they are imported later, inside the commands);
    # setdefault keeps a user's own choice.
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    _quiet_imported_libraries()
    warnings.simplefilter("ignore")


def _quiet_imported_libraries() -> None:
    """The same for libraries imported already (an in-process call, e.g. from a test)."""
    for name in ("diffusers", "transformers"):
        if name in sys.modules:
            library_logging = sys.modules[name].utils.logging
            library_logging.set_verbosity_error()
            library_logging.disable_progress_bar()


def _print_error(error: BaseException) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"error: {error_line(error)}\n")
    sys.stderr.flush()


def _one_line(text: str) -> str:
    return " ".join(text.split())
