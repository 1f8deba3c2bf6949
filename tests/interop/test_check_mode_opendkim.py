"""`-n` against the real `opendkim -n`: the same configurations pass and fail.

Each configuration is given to both; they must agree on the exit status (0, or 78 for a
configuration error). Among them the options opendkim reads only after `-n` returns
(dkimd.config.operational) and the process and resolver options (BaseDirectory,
ChangeRootDirectory, TemporaryDirectory, SoftStart, ResolverConfiguration).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.tools import require

pytestmark = [pytest.mark.interop]

CONFIGS = {
    "no-socket": "Mode v\n",
    "large-comment": "Mode v\n#" + "x" * 25000 + "\n",
    "bad-socket": "Mode v\nSocket bogus:xyz\n",
    "bad-socket-port": "Mode v\nSocket inet:notaport@localhost\n",
    "bad-autorestartrate": "Mode v\nAutoRestart yes\nAutoRestartRate bogus\n",
    "no-such-user": "Mode v\nUserID nosuchuser-dkimd\n",
    "umask-out-of-range": "Mode v\nUMask 01000\n",
    "umask-not-octal": "Mode v\nUMask 0999\n",
    "milterdebug-not-int": "Mode v\nMilterDebug abc\n",
    "milterdebug": "Mode v\nMilterDebug 6\n",
    "basedir-missing": "Mode v\nBaseDirectory {dir}/none\n",
    "basedir": "Mode v\nBaseDirectory {dir}\n",
    "chroot-missing": "Mode v\nChangeRootDirectory {dir}/none\n",
    "tmpdir-missing": "Mode v\nTemporaryDirectory {dir}/none\n",
    "softstart-file-missing": "Mode v\nSoftStart yes\nPeerList file:{dir}/none\n",
    "resolverconf-missing": "Mode v\nResolverConfiguration {dir}/none.conf\n",
    "dns-options": "Mode v\nDNSConnect yes\nResolverTracing yes\nQueryCache yes\n",
    "strict-test-mode": "Mode v\nStrictTestMode yes\n",
}


def _status(command: list[str], conf: Path) -> int:
    proc = subprocess.run(
        [*command, "-n", "-x", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=conf.parent,
    )
    return proc.returncode


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_verdict_as_opendkim(tmp_path: Path, name: str) -> None:
    opendkim = require("opendkim")
    conf = tmp_path / "opendkim.conf"
    conf.write_text(CONFIGS[name].format(dir=tmp_path))
    expected = _status([opendkim], conf)
    assert _status([sys.executable, "-m", "dkimd"], conf) == expected, (name, expected)


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_test_mode_exit_status_as_opendkim(tmp_path: Path, strict: bool, line_end: bytes) -> None:
    """`-t FILE`: 0 whatever the verdict; 65 under StrictTestMode for LF line ends."""
    opendkim = require("opendkim")
    message = b"From: a@example.com\nTo: b@example.net\nSubject: t\n\nHello.\n"
    (tmp_path / "msg.eml").write_bytes(message.replace(b"\n", line_end))
    conf = tmp_path / "opendkim.conf"
    conf.write_text("Mode v\n" + ("StrictTestMode yes\n" if strict else ""))
    codes = []
    for command in ([opendkim], [sys.executable, "-m", "dkimd"]):
        proc = subprocess.run(
            [*command, "-x", str(conf), "-t", str(tmp_path / "msg.eml")],
            capture_output=True,
            timeout=30,
            check=False,
        )
        codes.append(proc.returncode)
    assert codes[0] == (65 if strict and line_end == b"\n" else 0)
    assert codes[1] == codes[0]
