"""BaseDirectory: the directory the filter works in, entered while the configuration loads.

opendkim's dkimf_config_load does `chdir(BaseDirectory)` before it opens any data set or
key, so every relative path of the configuration (data sets, KeyFile, KeyTable key files,
TestPublicKeys, PidFile, a `local:` Socket) is relative to it, then and for as long as the
filter runs (KeyTable keys are read per message). A failure stops the load:
`<dir>: chdir(): <reason>`, exit 78. `Include` is not affected: the file is read, includes
and all, before the directory changes.

The change is the process's own, as in opendkim: a reload enters the new BaseDirectory, and
a reload that fails must put the old one back (`kept_on_failure`), or the running
configuration's relative paths would point elsewhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["enter_base_directory", "kept_on_failure"]


def enter_base_directory(path: str) -> str | None:
    """chdir to `path`; None, or opendkim's message when it fails."""
    try:
        os.chdir(path)
    except OSError as exc:
        return f"{path}: chdir(): {exc.strerror or exc}"
    return None


@contextlib.contextmanager
def kept_on_failure() -> Iterator[None]:
    """Run a reload; if it raises, go back to the directory we were in before it."""
    try:
        saved = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        # the current directory is gone or unreadable: nothing to go back to
        yield
        return
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            os.fchdir(saved)
        raise
    finally:
        os.close(saved)
