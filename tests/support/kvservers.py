"""Private memcached, redis-server and slapd instances for the key-value store tests.

    from support.kvservers import Memcached, RedisServer, Slapd, ThrowawayCa

    with Memcached(tmp_path / "mc") as mc:          # 127.0.0.1:mc.port
        mc.set("dkim:example.com", "example.com:sel:/keys/x.pem")
        mc.stop(); mc.start()                        # same port, empty again

    with RedisServer(tmp_path / "rd", password="pw") as rd:
        rd.command("SET", "k", "v")                  # through redis-cli? no: raw RESP here

    ca = ThrowawayCa(tmp_path / "ca")                     # a CA and a 127.0.0.1/localhost cert
    with Slapd(tmp_path / "ldap", ldif=..., ca=ca) as sd:
        sd.url, sd.ldaps_url, sd.ldapi_url

Every server runs in the foreground as a child of the test, on loopback ports from
support.tools.free_port() (and a UNIX socket under its directory for ldapi), with its data in
its own directory; stop() ends it (SIGTERM, then SIGKILL) and start() runs it again on the
same port, so a store can be seen to survive an outage. The programs come from apt
(memcached, redis-server, slapd + ldap-utils); `require()` skips without them, or fails under
CI.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from support.tools import free_port, require, wait_for_port

__all__ = ["Memcached", "RedisServer", "Slapd", "ThrowawayCa"]


class _Child:
    """A server process run in the foreground, restartable on the same port."""

    name = "server"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return wait_for_port("127.0.0.1", self.port, timeout=15)

    def start(self) -> None:
        log = open(self.dir / f"{self.name}.log", "ab")  # noqa: SIM115  (owned by the child)
        self.proc = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
        )
        log.close()
        if not self.ready():
            self.stop()
            text = (self.dir / f"{self.name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} did not start:\n{text}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing (a hung server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        # The signal is delivered asynchronously: wait until the kernel shows every thread
        # stopped, so that no request sent after pause() is still answered.
        deadline = time.monotonic() + 5
        task_dir = Path(f"/proc/{self.proc.pid}/task")
        while time.monotonic() < deadline:
            states = []
            for task in task_dir.iterdir():
                try:
                    states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
                except OSError:
                    continue
            if states and all(state in ("T", "t") for state in states):
                return
            time.sleep(0.005)
        raise RuntimeError(f"{self.name} did not stop on SIGSTOP")

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> _Child:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
        self.stop()


def _talk(port: int, data: bytes, until: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        reply = b""
        while not reply.endswith(until):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


class Memcached(_Child):
    name = "memcached"

    def argv(self) -> list[str]:
        argv = [require("memcached"), "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]
        return argv

    def set(self, key: str | bytes, value: str | bytes) -> None:
        k = key.encode() if isinstance(key, str) else key
        v = value.encode() if isinstance(value, str) else value
        reply = _talk(self.port, b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v), b"\r\n")
        assert reply == b"STORED\r\n", reply

    def has(self, key: str) -> bool:
        """Whether this server holds `key` (a plain `get`, not through dkimd)."""
        reply = _talk(self.port, b"get %s\r\n" % key.encode(), b"END\r\n")
        return reply.startswith(b"VALUE ")

    def stat(self, name: str) -> int:
        """One counter of `stats` (cmd_get: `get` commands answered; total_connections)."""
        reply = _talk(self.port, b"stats\r\n", b"END\r\n")
        for line in reply.split(b"\r\n"):
            if line.startswith(b"STAT %s " % name.encode()):
                return int(line.split()[2])
        raise AssertionError(reply)


def _resp(*args: str | bytes) -> bytes:
    out = b"*%d\r\n" % len(args)
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    return out


class RedisServer(_Child):
    name = "redis"

    def __init__(
        self, directory: Path, password: str | None = None, ca: ThrowawayCa | None = None
    ) -> None:
        super().__init__(directory)
        self.password = password
        self.ca = ca

    def argv(self) -> list[str]:
        argv = [require("redis-server"), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        if self.ca is not None:
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            argv += ["--tls-cert-file", str(self.ca.cert), "--tls-key-file", str(self.ca.key)]
            argv += ["--tls-ca-cert-file", str(self.ca.ca_cert)]
        else:
            argv += ["--port", str(self.port)]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        return argv

    def command(self, *args: str | bytes, db: int = 0) -> bytes:
        """One command over plain TCP (not for a TLS server) in database `db`, after AUTH."""
        assert self.ca is None
        data = b""
        if self.password is not None:
            data += _resp("AUTH", self.password)
        if db:
            data += _resp("SELECT", str(db))
        data += _resp(*args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(data + _resp("QUIT"))
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        return reply


class ThrowawayCa:
    """A throw-away CA and one server certificate for `names` (127.0.0.1 and localhost)."""

    def __init__(
        self, directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")
    ) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dkimd test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([_san(name) for name in names]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        self.ca_cert = directory / "ca.pem"
        self.cert = directory / "server.pem"
        self.key = directory / "server.key"
        self.ca_cert.write_bytes(ca_cert.public_bytes(pem))
        self.cert.write_bytes(cert.public_bytes(pem))
        self.key.write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        self.key.chmod(0o600)


def _san(name: str) -> Any:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


#: A small schema for the tests' DKIM entries, under OpenLDAP's experimental OID arc.
DKIM_SCHEMA = """\
attributetype ( 1.3.6.1.4.1.4203.666.11.1 NAME 'dkimDomain'
    EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
attributetype ( 1.3.6.1.4.1.4203.666.11.2 NAME 'dkimSelector'
    EQUALITY caseExactIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
attributetype ( 1.3.6.1.4.1.4203.666.11.3 NAME 'dkimKey'
    EQUALITY caseExactMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.3.6.1.4.1.4203.666.11.4 NAME 'dkimIdentity'
    EQUALITY caseExactMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
objectclass ( 1.3.6.1.4.1.4203.666.11.100 NAME 'dkimEntry' SUP top STRUCTURAL
    MUST ( cn ) MAY ( dkimDomain $ dkimSelector $ dkimKey $ dkimIdentity ) )
"""

SUFFIX = "dc=example,dc=com"
READER_DN = f"cn=reader,{SUFFIX}"


class Slapd(_Child):
    """slapd with back-mdb under `directory`, the DKIM schema, and `ldif` loaded by slapadd.

    Listens on ldap:// (port), ldaps:// (tls_port, when `ca` is given; StartTLS too) and
    ldapi:// (a socket in the directory). Access: `cn=reader` (password `reader_password`)
    and the test's own uid over ldapi with SASL EXTERNAL may read; anonymous may not.
    """

    name = "slapd"
    reader_password = "reader-secret"

    def __init__(
        self, directory: Path, ldif: str, ca: ThrowawayCa | None = None, loglevel: str = "0"
    ) -> None:
        super().__init__(directory)
        self.ca = ca
        self.loglevel = loglevel  # "stats" logs every search (base, filter) to slapd.log
        self.tls_port = free_port() if ca is not None else None
        self.socket_path = self.dir / "ldapi"
        if len(str(self.socket_path)) > 100:
            raise RuntimeError(f"{self.socket_path} is too long for a UNIX socket")
        (self.dir / "db").mkdir(exist_ok=True)
        (self.dir / "dkim.schema").write_text(DKIM_SCHEMA)
        (self.dir / "slapd.conf").write_text(self._conf())
        base = (
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
            "o: example\ndc: example\n\n"
            f"dn: {READER_DN}\nobjectClass: person\ncn: reader\nsn: reader\n"
            f"userPassword: {self.reader_password}\n\n"
        )
        (self.dir / "data.ldif").write_text(base + ldif)
        subprocess.run(
            [
                require("slapadd"),
                "-q",
                "-f",
                str(self.dir / "slapd.conf"),
                "-l",
                str(self.dir / "data.ldif"),
            ],
            check=True,
            capture_output=True,
        )

    def _conf(self) -> str:
        uid, gid = os.geteuid(), os.getegid()
        tls = ""
        if self.ca is not None:
            tls = (
                f"TLSCACertificateFile {self.ca.ca_cert}\n"
                f"TLSCertificateFile {self.ca.cert}\n"
                f"TLSCertificateKeyFile {self.ca.key}\n"
            )
        return (
            "include /etc/ldap/schema/core.schema\n"
            "include /etc/ldap/schema/cosine.schema\n"
            f"include {self.dir}/dkim.schema\n"
            f"pidfile {self.dir}/slapd.pid\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f"{tls}"
            f'authz-regexp "^gidnumber={gid}\\+uidnumber={uid},cn=peercred,cn=external,cn=auth$"'
            f' "{READER_DN}"\n'
            # SASL PLAIN/DIGEST-MD5 check a user's password against the directory's own
            # userPassword (no sasldb): uid=NAME[,cn=REALM],cn=MECH,cn=auth -> cn=NAME,...
            "sasl-auxprops slapd\nsasl-secprops none\n"
            'authz-regexp "^uid=([^,]+)(,cn=[^,]+)?,cn=[^,]+,cn=auth$"'
            f' "cn=$1,{SUFFIX}"\n'
            "database mdb\n"
            f'suffix "{SUFFIX}"\n'
            f'rootdn "cn=admin,{SUFFIX}"\n'
            f"directory {self.dir}/db\n"
            "maxsize 104857600\n"
            "index objectClass eq\nindex cn,dkimDomain,dkimIdentity eq\n"
            "access to attrs=userPassword by anonymous auth by * none\n"
            "access to * by users read by anonymous auth by * none\n"
        )

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def ldapi_url(self) -> str:
        return "ldapi://" + str(self.socket_path).replace("/", "%2F")

    def argv(self) -> list[str]:
        urls = [f"ldap://127.0.0.1:{self.port}/", self.ldapi_url + "/"]
        if self.tls_port is not None:
            urls.append(f"ldaps://127.0.0.1:{self.tls_port}/")
        slapd = require("slapd")
        return [
            slapd,
            "-d",
            self.loglevel,
            "-f",
            str(self.dir / "slapd.conf"),
            "-h",
            " ".join(urls),
        ]

    def ready(self) -> bool:
        if not wait_for_port("127.0.0.1", self.port, timeout=15):
            return False
        deadline = time.monotonic() + 10
        while not self.socket_path.exists():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def searched_filters(self) -> list[str]:
        """The filters of the searches slapd logged so far (needs loglevel "stats")."""
        text = (self.dir / f"{self.name}.log").read_text(errors="replace")
        return re.findall(r' SRCH base=".*" scope=\d deref=\d filter="(.*)"$', text, re.M)
