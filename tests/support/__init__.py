"""Shared test harness: fake DNS, and real Postfix / OpenDKIM / miltertest driven from tests.

Import it as the top-level package ``support`` (``tests/conftest.py`` puts ``tests/`` on
``sys.path``), e.g.::

    from support.fakedns import FakeDns
    from support.tools import require, free_port
    from support.opendkim import OpenDKIM, opendkim_sign, opendkim_verify, genkey
    from support.postfix import PrivatePostfix

Modules:

* ``fakedns``  -- threaded UDP+TCP authoritative DNS responder on loopback (resolver tests).
* ``tools``    -- locating system binaries; ``require()`` skips, or fails under CI; ``free_port()``.
* ``opendkim`` -- a private OpenDKIM daemon per test, key generation, one-shot sign/verify
  through ``miltertest``.
* ``postfix``  -- a private Postfix instance (own config/queue/data dirs, loopback smtpd,
  virtual Maildir delivery) with a milter hooked in.
* ``reference`` -- the seed's reference opendkim.conf, data sets and Postfix snippet
  (tests/data/config/reference).

The fixtures wrapping these live in ``tests/conftest.py``.
"""
