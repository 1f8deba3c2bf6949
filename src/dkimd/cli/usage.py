"""An argparse parser that reports a bad command line instead of exiting.

The opendkim-* tools each exit with their own status on a usage error (opendkim-genkey 1,
opendkim-testkey EX_USAGE, ...); argparse would exit 2 on its own. Subcommands catch
`UsageError` and return the status their OpenDKIM counterpart uses.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class UsageError(Exception):
    """The command line could not be parsed; the message says why."""


class RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)
