"""Test-wide set-up: `tests/` on sys.path (so `import support...` works) and harness fixtures.

Fixtures (see the modules in tests/support for the full APIs):

* ``fake_dns``        -- a running support.fakedns.FakeDns on 127.0.0.1 (UDP+TCP).
* ``dkim_key``        -- a fresh 1024-bit RSA key from the real opendkim-genkey:
                         DkimKey(domain="example.com", selector="mail", private_key, txt, records).
* ``make_dkim_key``   -- factory: make_dkim_key(domain, selector, bits=1024) -> DkimKey.
* ``opendkim``        -- factory: opendkim(**OpenDKIM kwargs) -> started OpenDKIM, stopped at
                         teardown; the work directory defaults to a fresh one under tmp_path.
* ``private_postfix`` -- factory: private_postfix(**PrivatePostfix kwargs) -> started
                         PrivatePostfix, stopped and removed at teardown.

Every fixture that needs a real program calls support.tools.require(), which skips the test
when the program is missing -- or fails it when the CI environment variable is set.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support.fakedns import FakeDns  # noqa: E402
from support.opendkim import DkimKey, OpenDKIM, genkey  # noqa: E402
from support.postfix import PrivatePostfix  # noqa: E402


@pytest.fixture
def fake_dns() -> Iterator[FakeDns]:
    with FakeDns() as server:
        yield server


@pytest.fixture
def make_dkim_key(tmp_path: Path) -> Callable[..., DkimKey]:
    counter = itertools.count()

    def make(domain: str = "example.com", selector: str = "mail", bits: int = 1024) -> DkimKey:
        return genkey(tmp_path / f"keys-{next(counter)}", domain, selector, bits)

    return make


@pytest.fixture
def dkim_key(make_dkim_key: Callable[..., DkimKey]) -> DkimKey:
    return make_dkim_key()


@pytest.fixture
def opendkim(tmp_path: Path) -> Iterator[Callable[..., OpenDKIM]]:
    started: list[OpenDKIM] = []
    counter = itertools.count()

    def start(workdir: Path | None = None, **kwargs: Any) -> OpenDKIM:
        od = OpenDKIM(workdir or tmp_path / f"opendkim-{next(counter)}", **kwargs)
        started.append(od)
        return od.start()

    yield start
    for od in reversed(started):
        od.stop()


@pytest.fixture
def private_postfix() -> Iterator[Callable[..., PrivatePostfix]]:
    started: list[PrivatePostfix] = []

    def start(**kwargs: Any) -> PrivatePostfix:
        pf = PrivatePostfix(**kwargs)
        started.append(pf)
        try:
            return pf.start()
        except BaseException:
            pf.close()
            raise

    yield start
    for pf in reversed(started):
        pf.close()
