"""Everything a benchmark run feeds the milters: keys, DNS records, messages, opendkim.conf.

Both milters read the very same opendkim.conf for a case; dkimd is a drop-in replacement, so
nothing here is dkimd-specific except the `Workers` line of the multi-core case (OpenDKIM
rejects unknown options: "configuration error at line N: unrecognized parameter").

Facts checked against OpenDKIM 2.11 (Debian 12) while writing this:
* `TestDNSData file:/path` with lines `name record text` answers TXT queries from the file.
* An Ed25519 key as PKCS#8 PEM ("BEGIN PRIVATE KEY") in the KeyTable signs with
  `SignatureAlgorithm ed25519-sha256`; the algorithm is global, so Ed25519 gets its own conf.
* Keys must be "secure" (RequireSafeKeys, default yes): mode 0600 and no directory above them
  writable by others. /tmp fails that ("key data is not secure: /tmp can be read or written by
  other users") and OpenDKIM then tempfails every message; see `_needs_unsafe_keys`.
"""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

DOMAIN = "example.com"
RSA_SELECTOR = "rsa"
ED_SELECTOR = "ed"
SENDER = f"alice@{DOMAIN}"
MB = 1024 * 1024


@dataclass(frozen=True)
class Workload:
    """Paths of one prepared benchmark directory."""

    root: Path
    port: int
    dns: Path
    msg_4k: Path
    msg_1m: Path
    msg_big: Path
    conf_rsa: Path
    conf_ed25519: Path
    conf_rsa_workers2: Path
    unsafe_keys: bool  # True when RequireSafeKeys had to be turned off (see module doc)


def prepare(root: Path, port: int, big_mb: int = 50) -> Workload:
    """Write keys, DNS data, messages and configs under `root` (created mode 0700)."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    keys = root / "keys"
    keys.mkdir(exist_ok=True)
    keys.chmod(0o700)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    _write_private(keys / "rsa.private", rsa_key)
    _write_private(keys / "ed25519.private", ed_key)

    rsa_pub = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_pub = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    dns = root / "dns.txt"
    dns.write_text(
        f"{RSA_SELECTOR}._domainkey.{DOMAIN} v=DKIM1; k=rsa; p={_b64(rsa_pub)}\n"
        f"{ED_SELECTOR}._domainkey.{DOMAIN} v=DKIM1; k=ed25519; p={_b64(ed_pub)}\n"
    )

    unsafe = _needs_unsafe_keys(keys)
    confs = {}
    for name, selector, key, extra in (
        ("rsa", RSA_SELECTOR, "rsa.private", []),
        ("ed25519", ED_SELECTOR, "ed25519.private", ["SignatureAlgorithm      ed25519-sha256"]),
        ("rsa-workers2", RSA_SELECTOR, "rsa.private", ["Workers                 2"]),
    ):
        keytable = root / f"KeyTable.{name}"
        signtable = root / f"SigningTable.{name}"
        keyname = f"{selector}._domainkey.{DOMAIN}"
        keytable.write_text(f"{keyname}    {DOMAIN}:{selector}:{keys / key}\n")
        signtable.write_text(f"*@{DOMAIN}    {keyname}\n")
        conf = root / f"{name}.conf"
        conf.write_text(_conf_text(port, keytable, signtable, dns, unsafe, extra))
        confs[name] = conf

    msg_4k = root / "msg-4k.eml"
    msg_1m = root / "msg-1m.eml"
    msg_big = root / f"msg-{big_mb}m.eml"
    write_message(msg_4k, 4 * 1024, "4 KB")
    write_message(msg_1m, 1 * MB, "1 MB body")
    write_message(msg_big, big_mb * MB, f"{big_mb} MB body")
    return Workload(
        root=root,
        port=port,
        dns=dns,
        msg_4k=msg_4k,
        msg_1m=msg_1m,
        msg_big=msg_big,
        conf_rsa=confs["rsa"],
        conf_ed25519=confs["ed25519"],
        conf_rsa_workers2=confs["rsa-workers2"],
        unsafe_keys=unsafe,
    )


def _conf_text(
    port: int, keytable: Path, signtable: Path, dns: Path, unsafe: bool, extra: list[str]
) -> str:
    lines = [
        "# Written by bench/run.py: the one config both milters run for this case.",
        "Mode                    sv",
        "Canonicalization        relaxed/relaxed",
        f"KeyTable                refile:{keytable}",
        f"SigningTable            refile:{signtable}",
        "InternalHosts           127.0.0.1",
        f"Socket                  inet:{port}@127.0.0.1",
        "Background              no",
        "Syslog                  no",
        f"TestDNSData             file:{dns}",
    ]
    if unsafe:
        lines.append("# The work directory sits below a world-writable one (see workload.py).")
        lines.append("RequireSafeKeys         no")
    return "\n".join(lines + extra) + "\n"


def _write_private(path: Path, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    path.chmod(0o600)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _needs_unsafe_keys(directory: Path) -> bool:
    """Whether OpenDKIM would call keys here insecure: some ancestor is group/world writable."""
    for d in [directory.resolve(), *directory.resolve().parents]:
        mode = d.stat().st_mode
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            return True
    return False


# Lines of plain text with the things relaxed canonicalization has to work on: runs of
# spaces, tabs, trailing whitespace, empty lines. About 64 bytes each.
_BODY_LINES = (
    b"The quick brown fox jumps over the lazy dog; then it naps.  ",
    b"Lorem ipsum dolor sit amet,\tconsectetur   adipiscing elit, sed",
    b"",
    b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWX \t",
)


def message_bytes(size: int, label: str) -> bytes:
    """A CRLF message of about `size` bytes from alice@example.com (header ~0.5 KB)."""
    head = (
        f"From: Alice Example <{SENDER}>\r\n"
        "To: Bob Example <bob@example.net>\r\n"
        f"Subject: dkimd benchmark message, {label}\r\n"
        " (a folded subject line)\r\n"
        "Date: Wed, 26 Nov 2025 12:00:00 +0000\r\n"
        f"Message-ID: <bench-{size}@{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
    ).encode("ascii")
    block = b"".join(line + b"\r\n" for line in _BODY_LINES)
    want = max(0, size - len(head))
    body = block * (want // len(block) + 1)
    cut = body.rfind(b"\r\n", 0, want) + 2  # whole lines only
    return head + body[:cut]


def write_message(path: Path, size: int, label: str) -> None:
    """Write a generated message unless an identical one is already there."""
    data = message_bytes(size, label)
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.write_bytes(data)
