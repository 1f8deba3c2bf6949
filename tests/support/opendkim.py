"""Real OpenDKIM for interop tests: key generation, a private daemon, one-shot sign/verify.

    from support.opendkim import OpenDKIM, genkey, opendkim_sign, opendkim_verify

    key = genkey(tmp_path, "example.com", "mail", bits=1024)   # opendkim-genkey
    key.private_key          # Path, chmod 600 in a 0700 directory
    key.txt                  # "v=DKIM1; h=sha256; k=rsa; p=MIGf..." (the TXT record text)
    key.records              # {"mail._domainkey.example.com": key.txt}

    signed = opendkim_sign(message, key.private_key, "example.com", "mail", "relaxed/simple")
    result = opendkim_verify(signed, key.records)   # the Authentication-Results value, e.g.
    # "verifier.test.example; dkim=pass (1024-bit key) header.d=example.com ... header.b=..."

    with OpenDKIM(tmp_path / "od", mode="sv", domain="example.com", selector="mail",
                  keyfile=key.private_key, dns_records=key.records) as od:
        od.postfix_milter      # "inet:127.0.0.1:PORT" for smtpd_milters
        od.socket_spec         # "inet:PORT@127.0.0.1" for miltertest / OpenDKIM syntax
        result = milter_transaction(od.socket_spec, message, client_addr="192.0.2.9")
        result.reply, result.headers("Authentication-Results")

`OpenDKIM` writes opendkim.conf (Mode, Domain/Selector/KeyFile or KeyTable/SigningTable,
Canonicalization, TestDNSData, InternalHosts, PidFile, Socket, extra `options`) into its
directory and runs `/usr/sbin/opendkim -f -x opendkim.conf` with stdout/stderr in
`opendkim.stderr` there; it waits for the socket to listen and stops (SIGTERM, then SIGKILL)
on exit. DNS always comes from `TestDNSData file:` (written from `dns_records`), so no test ever
queries real DNS; OpenDKIM takes a name missing from it as a failed lookup (KEYFAIL), not
NXDOMAIN, and so does dkimd.

Gotchas (handled here):

* `RequireSafeKeys` (default on) rejects a key when any directory above it, /tmp included, is
  writable by others: pytest's tmp_path is under /tmp, so the config says `RequireSafeKeys no`.
  The key itself is still chmod 600 in a 0700 directory.
* Running as root without `UserID` is fine; we do not set UserID (dropping to the `opendkim`
  user would need every tmp path to be readable by it).
* OpenDKIM `-l` only means "log to syslog"; there is no stderr logging. Startup errors go to
  stderr (captured); set `syslog=True` if a syslog daemon is there to read.
* Header values over the milter protocol: OpenDKIM does not ask for SMFIP_HDR_LEADSPC, so the
  MTA (Postfix, and miltertest here) sends each value with its leading blanks removed and
  OpenDKIM rebuilds the field as "Name: value". A field written "Name:value" (no space) or
  with several blanks after the colon therefore cannot survive *simple* header
  canonicalization through a milter; relaxed is unaffected. Folded values keep their CRLF+WSP.
* Header fields OpenDKIM adds come back LF-folded ("...;\\n\\tb=..."): `opendkim_sign`
  converts them to CRLF. The value starts with a space (" v=1; a=...").
* The authserv-id in Authentication-Results comes from `AuthservID` (set by `opendkim_verify`)
  or the MTA's `j` macro; without either it reads "unknown-host".
* `opendkim -t file` exists in 2.11 but treats the message as coming from localhost (internal,
  so it is accepted without verification) and prints nothing useful; miltertest is used instead.
* TestDNSData holds one record per name for OpenDKIM (it returns only the first line for a
  name); dkimd's TestDnsFile returns all of them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from support.tools import free_port, require, wait_for_listen

__all__ = [
    "DkimKey",
    "MilterResult",
    "OpenDKIM",
    "genkey",
    "lua_string",
    "milter_transaction",
    "opendkim_sign",
    "opendkim_verify",
    "run_miltertest",
    "split_message",
    "write_test_dns_data",
]


# ---- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    private_key: Path
    txt: str

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def records(self) -> dict[str, str]:
        return {self.dns_name: self.txt}


def parse_genkey_txt(text: str) -> str:
    """The TXT record text from opendkim-genkey's zone-file snippet (strings concatenated)."""
    return "".join(re.findall(r'"([^"]*)"', text))


def genkey(
    directory: str | os.PathLike[str],
    domain: str = "example.com",
    selector: str = "mail",
    bits: int = 1024,
    extra_args: Sequence[str] = (),
) -> DkimKey:
    """Make an RSA key with the real opendkim-genkey in `directory` (created 0700)."""
    tool = require("opendkim-genkey")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    subprocess.run(
        [tool, "-b", str(bits), "-d", domain, "-s", selector, "-D", str(d), *extra_args],
        check=True,
        capture_output=True,
        timeout=60,
    )
    private = d / f"{selector}.private"
    private.chmod(0o600)
    txt = parse_genkey_txt((d / f"{selector}.txt").read_text())
    return DkimKey(domain, selector, private, txt)


def write_test_dns_data(
    path: str | os.PathLike[str], records: Mapping[str, str | Iterable[str]]
) -> Path:
    """Write an OpenDKIM TestDNSData `file:` data set: one "name record-text" line per record."""
    lines: list[str] = []
    for name, value in records.items():
        values = [value] if isinstance(value, str) else list(value)
        for v in values:
            if "\n" in v or "#" in v:
                raise ValueError(f"TestDNSData cannot hold newline or '#': {v!r}")
            lines.append(f"{name.rstrip('.')} {v}\n")
    p = Path(path)
    p.write_text("".join(lines))
    return p


# ---- the daemon -------------------------------------------------------------------------------


def _table(path: Path, entries: Mapping[str, str] | str | os.PathLike[str]) -> str:
    if isinstance(entries, Mapping):
        path.write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
        return str(path)
    return os.fspath(entries)


def key_and_table_options(
    directory: Path,
    *,
    domain: str | None = None,
    selector: str | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    key_table: Mapping[str, str] | str | os.PathLike[str] | None = None,
    signing_table: Mapping[str, str] | str | os.PathLike[str] | None = None,
    test_dns_data: str | os.PathLike[str] | None = None,
    dns_records: Mapping[str, str | Iterable[str]] | None = None,
    internal_hosts: Sequence[str] | None = None,
    peer_list: Sequence[str] | None = None,
) -> dict[str, str]:
    """The keys, tables, host lists and TestDNSData part of an opendkim.conf, writing the
    files they name into `directory`; shared by the OpenDKIM and dkimd fixtures so one test
    can run either daemon on the same set-up."""
    conf: dict[str, str] = {}
    if domain:
        conf["Domain"] = domain
    if selector:
        conf["Selector"] = selector
    if keyfile is not None:
        conf["KeyFile"] = os.fspath(keyfile)
    if key_table is not None:
        conf["KeyTable"] = "file:" + _table(directory / "KeyTable", key_table)
    if signing_table is not None:
        conf["SigningTable"] = "refile:" + _table(directory / "SigningTable", signing_table)
    if test_dns_data is not None:
        spec = os.fspath(test_dns_data)
        conf["TestDNSData"] = spec if spec.startswith("file:") else f"file:{spec}"
    else:
        path = write_test_dns_data(directory / "dns.data", dns_records or {})
        conf["TestDNSData"] = f"file:{path}"
    for option, hosts in (("InternalHosts", internal_hosts), ("PeerList", peer_list)):
        if hosts is not None:
            (directory / option).write_text("".join(f"{h}\n" for h in hosts))
            conf[option] = f"refile:{directory / option}"
    return conf


class OpenDKIM:
    """A private /usr/sbin/opendkim listening on 127.0.0.1:port (or a unix socket)."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        mode: str = "sv",
        domain: str | None = None,
        selector: str | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        key_table: Mapping[str, str] | str | os.PathLike[str] | None = None,
        signing_table: Mapping[str, str] | str | os.PathLike[str] | None = None,
        canonicalization: str = "relaxed/relaxed",
        dns_records: Mapping[str, str | Iterable[str]] | None = None,
        test_dns_data: str | os.PathLike[str] | None = None,
        internal_hosts: Sequence[str] | None = None,
        authserv_id: str | None = None,
        options: Mapping[str, str] | None = None,
        port: int | None = None,
        unix_socket: bool = False,
        syslog: bool = False,
        start_timeout: float = 10.0,
    ) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.conf_path = self.dir / "opendkim.conf"
        self.log_path = self.dir / "opendkim.stderr"
        self.pid_path = self.dir / "opendkim.pid"
        self.start_timeout = start_timeout
        self.port = 0
        self.socket_path: Path | None = None
        if unix_socket:
            self.socket_path = self.dir / "milter.sock"
            self.socket_spec = f"local:{self.socket_path}"
            self.postfix_milter = f"unix:{self.socket_path}"
        else:
            self.port = port or free_port()
            self.socket_spec = f"inet:{self.port}@127.0.0.1"
            self.postfix_milter = f"inet:127.0.0.1:{self.port}"

        conf: dict[str, str] = {
            "Mode": mode,
            "Canonicalization": canonicalization,
            "Socket": self.socket_spec,
            "PidFile": str(self.pid_path),
            "RequireSafeKeys": "no",
            "Syslog": "yes" if syslog else "no",
            "LogWhy": "yes",
            "UMask": "007",
        }
        conf.update(
            key_and_table_options(
                self.dir,
                domain=domain,
                selector=selector,
                keyfile=keyfile,
                key_table=key_table,
                signing_table=signing_table,
                test_dns_data=test_dns_data,
                dns_records=dns_records,
                internal_hosts=internal_hosts,
            )
        )
        if authserv_id:
            conf["AuthservID"] = authserv_id
        conf.update(options or {})
        self.config = conf
        self.conf_path.write_text(
            "# generated by tests/support/opendkim.py\n"
            + "".join(f"{k} {v}\n" for k, v in conf.items())
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OpenDKIM:
        binary = require("opendkim")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-f", "-x", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        if not self._wait_ready():
            self.stop()
            raise RuntimeError(
                f"opendkim did not come up on {self.socket_spec}:\n{self.log_text()}\n"
                f"--- {self.conf_path} ---\n{self.conf_path.read_text()}"
            )
        return self

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            if self.socket_path is not None:
                if self.socket_path.exists():
                    return True
            elif wait_for_listen(self.port, 0.05):
                return True
            time.sleep(0.02)
        return False

    def stop(self, grace: float = 0.3) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds.

        libmilter only notices SIGTERM when its accept loop wakes up (every 5 s), so waiting
        for a clean exit would cost ~5 s per daemon; tests do not need OpenDKIM's clean exit."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> OpenDKIM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- driving a milter with miltertest ---------------------------------------------------------


def lua_string(data: bytes | str) -> str:
    """A Lua double-quoted literal holding exactly these bytes (decimal escapes, 3 digits)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    out = ['"']
    for b in data:
        if 0x20 <= b < 0x7F and b not in (0x22, 0x5C):
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    out.append('"')
    return "".join(out)


def split_message(message: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """Split into ([(name, value)], body) the way an MTA feeds a milter.

    Line ends become CRLF; folded continuation lines stay in the value; leading blanks of the
    value are dropped (no SMFIP_HDR_LEADSPC, see the module notes)."""
    msg = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if msg.startswith(b"\r\n"):
        head, body = b"", msg[2:]
    elif b"\r\n\r\n" in msg:
        head, body = msg.split(b"\r\n\r\n", 1)
    else:
        head, body = msg, b""
    fields: list[list[bytes]] = []
    for line in head.split(b"\r\n") if head else []:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    headers: list[tuple[str, bytes]] = []
    for lines in fields:
        raw = b"\r\n".join(lines)
        name, sep, value = raw.partition(b":")
        if not sep:
            raise ValueError(f"not a header field: {raw!r}")
        headers.append((name.decode("latin-1").strip(), value.lstrip(b" \t")))
    return headers, body


@dataclass
class MilterResult:
    reply: str  # SMFIR_* character of the end-of-message reply: a=accept, c=continue, r, t, d ...
    added: list[tuple[str, str]] = field(default_factory=list)  # (name, value) as the milter gave
    output: str = ""

    def headers(self, name: str) -> list[str]:
        return [v for n, v in self.added if n.lower() == name.lower()]


def run_miltertest(script: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a Lua script with miltertest; raise with its output if it fails."""
    tool = require("miltertest")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        proc = subprocess.run(
            [tool, "-s", path], capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        raise RuntimeError(
            f"miltertest failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
            f"--- script ---\n{script[:4000]}"
        )
    return proc


_MARK = "\x1e"  # record separator between output fields


def milter_transaction(
    socket_spec: str,
    message: bytes,
    *,
    client_host: str = "localhost",
    client_addr: str = "127.0.0.1",
    mail_from: str | None = None,
    rcpt_to: Sequence[str] = ("rcpt@example.net",),
    macros: Mapping[str, str] | None = None,
    collect: Sequence[str] = ("DKIM-Signature", "Authentication-Results"),
    body_chunk: int = 65535,
) -> MilterResult:
    """One full message through a running milter; return its EOM reply and added headers."""
    headers, body = split_message(message)
    if mail_from is None:
        mail_from = "sender@example.com"
        for name, value in headers:
            if name.lower() == "from":
                m = re.search(rb"[\w.+-]+@[\w.-]+", value)
                if m:
                    mail_from = m.group(0).decode()
                break
    all_macros = {"j": "mx.test.example", "i": "TESTQUEUEID"}
    all_macros.update(macros or {})
    s: list[str] = [
        "mt.set_timeout(20)",
        f"local conn = mt.connect({lua_string(socket_spec)}, 100, 0.05)",
        'if conn == nil then error("mt.connect failed") end',
        "local function ok(r, what) if r ~= nil then error(what .. ': ' .. r) end end",
        # A filter may decline RCPT (SMFIP_NORCPT, as dkimd does): Postfix then does not
        # send it, and miltertest refuses to; skip it the same way.
        "local function optional(what, fn, ...) local called, r = pcall(fn, ...) "
        "if not called then if string.find(tostring(r), 'negotiated SMFIP_NO', 1, true) "
        "then return end error(what .. ': ' .. tostring(r)) end ok(r, what) end",
        "ok(mt.macro(conn, SMFIC_CONNECT"
        + "".join(f", {lua_string(k)}, {lua_string(v)}" for k, v in all_macros.items())
        + '), "macro")',
        f'ok(mt.conninfo(conn, {lua_string(client_host)}, {lua_string(client_addr)}), "conninfo")',
        f'ok(mt.mailfrom(conn, {lua_string("<" + mail_from + ">")}), "mailfrom")',
    ]
    for rcpt in rcpt_to:
        s.append(f'optional("rcptto", mt.rcptto, conn, {lua_string("<" + rcpt + ">")})')
    for name, value in headers:
        s.append(f'ok(mt.header(conn, {lua_string(name)}, {lua_string(value)}), "header")')
    s.append('ok(mt.eoh(conn), "eoh")')
    for i in range(0, len(body), body_chunk):
        s.append(f'ok(mt.bodystring(conn, {lua_string(body[i : i + body_chunk])}), "body")')
    s.append('ok(mt.eom(conn), "eom")')
    s.append(f'io.write("reply", {lua_string(_MARK)}, string.char(mt.getreply(conn)), "\\n")')
    for name in collect:
        s.append(
            "for n = 0, 49 do "
            f"local v = mt.getheader(conn, {lua_string(name)}, n); "
            "if v == nil then break end; "
            f'io.write("header", {lua_string(_MARK)}, {lua_string(name)}, {lua_string(_MARK)}, '
            f'string.gsub(v, "\\n", "\\\\n"), "\\n") end'
        )
    s.append("mt.disconnect(conn)")
    proc = run_miltertest("\n".join(s) + "\n")
    result = MilterResult(reply="", output=proc.stdout)
    for line in proc.stdout.split("\n"):
        parts = line.split(_MARK)
        if parts[0] == "reply" and len(parts) == 2:
            result.reply = parts[1]
        elif parts[0] == "header" and len(parts) == 3:
            result.added.append((parts[1], parts[2].replace("\\n", "\n")))
    return result


def opendkim_sign(
    message: bytes,
    keyfile: str | os.PathLike[str],
    domain: str,
    selector: str,
    canon: str = "relaxed/relaxed",
    *,
    options: Mapping[str, str] | None = None,
) -> bytes:
    """Sign `message` with the real OpenDKIM; return it (CRLF) with the DKIM-Signature on top."""
    with (
        tempfile.TemporaryDirectory(prefix="dkimd-od-sign-") as tmp,
        OpenDKIM(
            Path(tmp) / "od",
            mode="s",
            domain=domain,
            selector=selector,
            keyfile=keyfile,
            canonicalization=canon,
            options=options,
        ) as od,
    ):
        result = milter_transaction(od.socket_spec, message, collect=("DKIM-Signature",))
        sigs = result.headers("DKIM-Signature")
        if not sigs:
            raise RuntimeError(f"OpenDKIM did not sign (reply {result.reply!r}):\n{od.log_text()}")
    value = sigs[0].replace("\r\n", "\n").replace("\n", "\r\n")
    body = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return b"DKIM-Signature:" + value.encode("latin-1") + b"\r\n" + body


def opendkim_verify(
    message: bytes,
    dns_records: Mapping[str, str | Iterable[str]],
    *,
    authserv_id: str = "verifier.test.example",
    client_addr: str = "192.0.2.200",
    options: Mapping[str, str] | None = None,
) -> str:
    """Verify `message` with the real OpenDKIM; return its Authentication-Results value.

    The value is unfolded to one line, e.g. "verifier.test.example; dkim=pass (1024-bit key)
    header.d=example.com header.i=@example.com header.a=rsa-sha256 header.s=mail header.b=ab".
    The client is an outside address so OpenDKIM verifies instead of signing. Returns "" when
    OpenDKIM added no Authentication-Results at all (it does that, for instance, when the
    signing key's DNS name does not exist)."""
    with (
        tempfile.TemporaryDirectory(prefix="dkimd-od-verify-") as tmp,
        OpenDKIM(
            Path(tmp) / "od",
            mode="v",
            dns_records=dns_records,
            authserv_id=authserv_id,
            options=options,
        ) as od,
    ):
        result = milter_transaction(
            od.socket_spec,
            message,
            client_host="mx.outside.example",
            client_addr=client_addr,
            collect=("Authentication-Results",),
        )
        found = result.headers("Authentication-Results")
    return " ".join(found[0].split()) if found else ""
