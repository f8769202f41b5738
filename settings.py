"""Experiment config → validated, typed settings, with every rule in one place; and the project's
user-error types and the wrapper that turns them into one line on stderr and an exit code.

Every command calls `resolve` (or `hyperparameters`) first, on every rank, before anything is
downloaded, featurized or loaded, and reports every problem at once, each naming the key, the value,
what is allowed and the fix:

    python model_def.py --config CONFIG --check     # the resolved settings as JSON, or the errors

Exit codes of every command: 0 done, 1 bad data or environment (a file, a download, a model
directory), 2 bad usage or config; a traceback means a bug in the project.
"""
import difflib
import json
import math
import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional

import constants


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


def run_command(main: Callable, argv=None):
    """Run a command's `main(argv)`: a UserError (or an OSError naming a file: permissions, a full
    disk) ends as `error: ...` lines on stderr and exit code 1 or 2, never as a traceback."""
    try:
        return main(argv)
    except UserError as err:
        for line in err.lines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(err.exit_code)
    except OSError as err:
        if err.filename is None:
            raise
        print(f"error: {err.filename}: {err.strerror or err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
