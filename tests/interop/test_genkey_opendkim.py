"""`dkimd genkey` against the real opendkim-genkey and OpenDKIM.

* For each flag combination, both tools run with the same flags; the .txt files must be
  identical once the base64 key characters are masked (same layout, same tags, same
  piece breaks), and the .private files must be the same kind of PEM with the same mode.
* Real OpenDKIM signs with a dkimd-made key (RSA and Ed25519); the signature verifies
  with dkimpy (RSA) and with a second, verifying OpenDKIM fed the dkimd-made record.
* dkimpy signs with an opendkim-genkey key using the record opendkim-genkey wrote.

Under CI=true a missing opendkim-genkey / opendkim / miltertest fails these tests.
"""

from __future__ import annotations

import contextlib
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from dkimd.cli import genkey
from dkimd.keytools.record import zone_txt_strings
from support.tools import free_port, require, wait_for_port

pytestmark = pytest.mark.interop

FLAG_SETS: list[list[str]] = [
    [],
    ["-s", "mail", "-d", "example.com"],  # the seed recipe
    ["-a", "-s", "mail", "-d", "example.com"],
    ["-b", "1024"],
    ["-b", "4096", "-s", "big"],
    ["-b", "768"],
    ["-t"],
    ["-S"],
    ["--nosubdomains"],
    ["-r"],
    ["-t", "-S", "-r"],
    ["-aStr", "-d", "example.net"],
    ["-n", "rotated 2024"],
    ["-h", "sha1:sha256"],
    ["--hash-algorithms=sha1"],
    ["--restrict", "--testmode", "--selector=sel", "--domain=example.org", "--append-domain"],
]


def _mask_key(text: str) -> str:
    """The .txt with every base64 character of p= replaced, pieces and layout kept."""
    head, sep, tail = text.partition('"p=')
    assert sep, text
    end = tail.index('" )')
    return head + sep + re.sub(r"[A-Za-z0-9+/=]", "K", tail[:end]) + tail[end:]


def _record(txt: Path) -> str:
    return "".join(zone_txt_strings(txt.read_text()))


def _tags(record: str) -> dict[str, str]:
    pairs = [t.strip().split("=", 1) for t in record.split(";") if t.strip()]
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: " ".join(f) or "defaults")
def test_txt_layout_matches_opendkim_genkey(tmp_path: Path, flags: list[str]) -> None:
    real_tool = require("opendkim-genkey")
    real_dir, ours_dir = tmp_path / "real", tmp_path / "ours"
    real_dir.mkdir()
    ours_dir.mkdir()
    subprocess.run([real_tool, "-D", str(real_dir), *flags], check=True, timeout=300)
    assert genkey.main(["-D", str(ours_dir), *flags]) == 0

    real_files = sorted(p.name for p in real_dir.iterdir())
    assert sorted(p.name for p in ours_dir.iterdir()) == real_files
    txt_name = next(n for n in real_files if n.endswith(".txt"))
    real_txt = (real_dir / txt_name).read_text()
    ours_txt = (ours_dir / txt_name).read_text()
    assert _mask_key(ours_txt) == _mask_key(real_txt)

    real_tags, ours_tags = _tags(_record(real_dir / txt_name)), _tags(_record(ours_dir / txt_name))
    assert ours_tags.keys() == real_tags.keys()
    assert {k: v for k, v in ours_tags.items() if k != "p"} == {
        k: v for k, v in real_tags.items() if k != "p"
    }
    assert len(ours_tags["p"]) == len(real_tags["p"])  # same key size

    key_name = txt_name.removesuffix(".txt") + ".private"
    real_pem = (real_dir / key_name).read_bytes()
    ours_pem = (ours_dir / key_name).read_bytes()
    assert ours_pem.splitlines()[0] == real_pem.splitlines()[0] == b"-----BEGIN PRIVATE KEY-----"
    for directory in (real_dir, ours_dir):
        assert stat.S_IMODE((directory / key_name).stat().st_mode) == 0o600


# --- OpenDKIM signing with a dkimd-made key ------------------------------------------------

_SIGN_LUA = """\
local conn = mt.connect("inet:{port}@127.0.0.1", 40, 0.25)
if conn == nil then error("mt.connect() failed") end
mt.macro(conn, SMFIC_CONNECT, "j", "mx.example.com")
if mt.conninfo(conn, "localhost", "127.0.0.1") ~= nil then error("conninfo") end
mt.macro(conn, SMFIC_MAIL, "i", "QID1")
if mt.mailfrom(conn, "<alice@example.com>") ~= nil then error("mailfrom") end
if mt.rcptto(conn, "<bob@example.org>") ~= nil then error("rcptto") end
{headers}
if mt.eoh(conn) ~= nil then error("eoh") end
if mt.bodystring(conn, "{body}") ~= nil then error("body") end
if mt.eom(conn) ~= nil then error("eom") end
local value = mt.getheader(conn, "{want}", 0)
if value == nil then error("no {want} added") end
print("{want}:" .. value)
mt.disconnect(conn)
"""

HEADERS = [
    ("From", "Alice <alice@example.com>"),
    ("To", "bob@example.org"),
    ("Subject", "key made by dkimd genkey"),
    ("Date", "Thu, 26 Nov 2026 15:00:00 +0000"),
    ("Message-ID", "<genkey-interop@example.com>"),
]
BODY = "Hello Bob,\r\n\r\nthis was signed by OpenDKIM with a dkimd key.\r\n"


@contextlib.contextmanager
def _opendkim(workdir: Path, settings: dict[str, str]) -> Iterator[int]:
    """A private opendkim listening on a loopback port, stopped afterwards."""
    opendkim = require("opendkim")
    port = free_port()
    conf = workdir / f"opendkim-{port}.conf"
    lines = {
        "Socket": f"inet:{port}@127.0.0.1",
        "Syslog": "no",
        # Keys live under pytest's tmp dir; /tmp is world-writable, which OpenDKIM's
        # safety walk rejects outright. Key file safety has its own tests.
        "RequireSafeKeys": "no",
        "Canonicalization": "relaxed/relaxed",
        **settings,
    }
    conf.write_text("".join(f"{k} {v}\n" for k, v in lines.items()))
    log = workdir / f"opendkim-{port}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([opendkim, "-f", "-x", str(conf)], stderr=err, stdout=err)
    try:
        if not wait_for_port("127.0.0.1", port, 10):
            proc.kill()
            proc.wait()
            pytest.fail(f"opendkim did not start: {log.read_text(errors='replace')}")
        yield port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _milter_run(workdir: Path, port: int, headers: list[tuple[str, str]], want: str) -> str:
    """Send one message through the milter; return the `want` header field it added."""
    miltertest = require("miltertest")
    lua_headers = "\n".join(
        f'if mt.header(conn, "{name}", "{value}") ~= nil then error("header") end'
        for name, value in headers
    )
    body = BODY.replace("\r", "\\r").replace("\n", "\\n")
    script = workdir / f"run-{port}.lua"
    script.write_text(_SIGN_LUA.format(port=port, headers=lua_headers, body=body, want=want))
    done = subprocess.run(
        [miltertest, "-s", str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr + done.stdout
    field = done.stdout.strip()
    assert field.startswith(f"{want}:"), done.stdout
    return field.removeprefix(f"{want}:")


def _message(signature: str) -> bytes:
    # miltertest shows the added field folded with bare LF; on the wire it is CRLF.
    folded = signature.replace("\r\n", "\n").replace("\n", "\r\n")
    head = f"DKIM-Signature:{folded}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in HEADERS)
    return (head + "\r\n" + BODY).encode()


def _opendkim_sign(workdir: Path, key: Path, selector: str, algorithm: str) -> str:
    settings = {
        "Mode": "s",
        "Domain": "example.com",
        "Selector": selector,
        "KeyFile": str(key),
        "SignatureAlgorithm": algorithm,
    }
    with _opendkim(workdir, settings) as port:
        return _milter_run(workdir, port, HEADERS, "DKIM-Signature")


def _opendkim_verify(workdir: Path, signature: str, dns_name: str, record: str) -> str:
    """Authentication-Results from a verifying OpenDKIM that sees `record` at `dns_name`."""
    dns_file = workdir / "testdns"
    dns_file.write_text(f"{dns_name} {record}\n")
    settings = {
        "Mode": "v",
        "TestDNSData": f"file:{dns_file}",
        "AuthservID": "verifier.example.org",
        "MinimumKeyBits": "1024",
    }
    folded = " ".join(signature.split())  # one line for the Lua string literal
    with _opendkim(workdir, settings) as port:
        headers = [("DKIM-Signature", folded), *HEADERS]
        return _milter_run(workdir, port, headers, "Authentication-Results")


def test_opendkim_signs_with_dkimd_rsa_key(tmp_path: Path) -> None:
    assert genkey.main(["-D", str(tmp_path), "-s", "mail", "-d", "example.com"]) == 0
    record = _record(tmp_path / "mail.txt")
    signature = _opendkim_sign(tmp_path, tmp_path / "mail.private", "mail", "rsa-sha256")
    assert "a=rsa-sha256" in signature and "s=mail" in signature

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail._domainkey.example.com."
        return record.encode()

    assert dkim.verify(_message(signature), dnsfunc=dnsfunc)
    results = _opendkim_verify(tmp_path, signature, "mail._domainkey.example.com", record)
    assert "dkim=pass" in results, results


def test_opendkim_signs_with_dkimd_ed25519_key(tmp_path: Path) -> None:
    assert genkey.main(["-D", str(tmp_path), "--ed25519", "-s", "ed", "-d", "example.com"]) == 0
    record = _record(tmp_path / "ed.txt")
    signature = _opendkim_sign(tmp_path, tmp_path / "ed.private", "ed", "ed25519-sha256")
    assert "a=ed25519-sha256" in signature
    results = _opendkim_verify(tmp_path, signature, "ed._domainkey.example.com", record)
    assert "dkim=pass" in results, results


def test_opendkim_verifier_rejects_a_mismatched_dkimd_record(tmp_path: Path) -> None:
    # Guards the two tests above: the verifying OpenDKIM really checks against the record.
    assert genkey.main(["-D", str(tmp_path), "-s", "one", "-b", "1024"]) == 0
    assert genkey.main(["-D", str(tmp_path), "-s", "two", "-b", "1024"]) == 0
    signature = _opendkim_sign(tmp_path, tmp_path / "one.private", "one", "rsa-sha256")
    other = _record(tmp_path / "two.txt")
    results = _opendkim_verify(tmp_path, signature, "one._domainkey.example.com", other)
    assert "dkim=fail" in results, results


def test_dkimpy_signs_with_opendkim_genkey_key(tmp_path: Path) -> None:
    real_tool = require("opendkim-genkey")
    subprocess.run(
        [real_tool, "-D", str(tmp_path), "-s", "mail", "-d", "example.com"], check=True, timeout=300
    )
    record = _record(tmp_path / "mail.txt")
    message = "".join(f"{n}: {v}\r\n" for n, v in HEADERS).encode() + b"\r\n" + BODY.encode()
    signature = dkim.sign(
        message,
        b"mail",
        b"example.com",
        (tmp_path / "mail.private").read_bytes(),
        include_headers=[b"from", b"to", b"subject"],
    )

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record.encode()

    assert dkim.verify(signature + message, dnsfunc=dnsfunc)


def test_dkimd_engine_signs_with_opendkim_genkey_key(tmp_path: Path) -> None:
    from dkimd.dkim import Signer, SigningRequest, load_private_key_file, split_message

    real_tool = require("opendkim-genkey")
    subprocess.run(
        [real_tool, "-D", str(tmp_path), "-s", "mail", "-d", "example.com"], check=True, timeout=300
    )
    record = _record(tmp_path / "mail.txt")
    message = "".join(f"{n}: {v}\r\n" for n, v in HEADERS).encode() + b"\r\n" + BODY.encode()
    headers, body_at = split_message(message)
    key = load_private_key_file(tmp_path / "mail.private")
    signer = Signer(SigningRequest("example.com", "mail", key))
    signer.feed_body(message[body_at:])
    field = signer.sign(headers)
    signed = field.name + b":" + field.value + b"\r\n" + message

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail._domainkey.example.com."
        return record.encode()

    assert dkim.verify(signed, dnsfunc=dnsfunc)
    results = _opendkim_verify(
        tmp_path, field.value.decode(), "mail._domainkey.example.com", record
    )
    assert "dkim=pass" in results, results
