"""What every command promises about mistakes: the user-error types and their exit codes, the
argument parser and the wrapper that end a mistake as one `error:` line, and the one logging setup.

Exit codes of every command: 0 done, 1 bad data or environment (a file, a download, a model
directory), 2 bad usage or config; a traceback means a bug in the project.
"""

import argparse
import logging
import math
import os
import sys
from typing import Callable, List


class UserError(Exception):
    """A problem with what the user gave or the environment (exit 1). The message names the file or
    key, the problem and the fix."""

    exit_code = 1

    def lines(self) -> List[str]:
        return [str(self)]


class ConfigError(UserError):
    """Bad usage or config (exit 2), holding every problem found."""

    exit_code = 2

    def __init__(self, problems, where: str = ""):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.where = where
        super().__init__("; ".join(self.lines()))

    def lines(self) -> List[str]:
        prefix = f"{self.where}: " if self.where else ""
        return [prefix + p for p in self.problems]


class DataError(UserError, ValueError):
    """Bad input data: the message names the file, the record and what to do (exit 1)."""


class DiskFull(UserError):
    """A write that ran out of space or quota (exit 1): names the filesystem. Not an OSError, so
    nothing retries it as if a network had failed."""

    def __init__(self, path: str, err: Exception):
        folder = os.path.dirname(os.path.abspath(path))
        super().__init__(
            f"the filesystem at {folder} is full ({getattr(err, 'strerror', None) or err}); nothing was left "
            "half-written. Free space there (or raise the quota), or write elsewhere, and run again."
        )


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are the project's: one `error:` line and exit 2 (argparse's own
    also prints the usage)."""

    def error(self, message):
        raise ConfigError(f"{message} (see --help)")


def finite_float(text: str) -> float:
    """An argparse type: a finite number (float() also takes nan and inf)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def setup_logging() -> None:
    """Log lines with time, logger and level on stderr (stdout carries each command's JSON)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def run_command(main: Callable, argv=None):
    """Run a command's `main(argv)`: a UserError (or an OSError naming a file: permissions, a full
    disk) ends as `error: ...` lines on stderr and exit code 1 or 2, never as a traceback."""
    try:
        return main(argv)
    except UserError as err:
        for line in err.lines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(err.exit_code)
    except BrokenPipeError:  # the reader of stdout went away (`| head`): nothing left to tell it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as err:
        if err.filename is None:
            raise
        print(f"error: {err.filename}: {err.strerror or err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
