"""A signed DNS tree on loopback for the DNSSEC tests: nsd serving it, unbound validating it.

    with DnssecTree(tmp_path, key_record) as tree:
        tree.nsd_port, tree.unbound_port     # 127.0.0.1 UDP+TCP
        tree.anchor_file                     # the DS of `dkimtest.`, unbound's format
        tree.key_name("signed")              # "sel._domainkey.signed.dkimtest"

The zones (all ECDSA P-256, signed with ldns-signzone, NSEC; one key per zone):

    dkimtest.            the trust anchor's zone; delegates to the four below
    signed.dkimtest.     DS in the parent, signed: a key record there is secure
    unsigned.dkimtest.   no DS (the parent's NSEC proves it), not signed: insecure
    tampered.dkimtest.   DS in the parent, the key record's RRSIG altered: bogus
    expired.dkimtest.    DS in the parent, signed with RRSIGs that expired in 2020: bogus
    stripped.dkimtest.   DS in the parent, signed, the key record's RRSIG removed (what an
                         attacker downgrading to "unsigned" would send): bogus
    nsec3.dkimtest.      signed with NSEC3, delegates unsigned.nsec3.dkimtest. (no DS: the
                         matching NSEC3 proves it): insecure
    optout.dkimtest.     signed with NSEC3 opt-out (as .com), delegates
                         unsigned.optout.dkimtest. (no DS, no NSEC3 of its own: an opt-out
                         span covers it): insecure

Each key-holding zone (CHILDREN) holds `sel._domainkey.<child>` TXT = `key_record`;
signed.dkimtest. also holds the CNAMEs of ALIASES.
unbound has the anchor and a
stub zone to nsd, sends Extended DNS Errors (`ede: yes`) and caches nothing across tests
(a new instance per tree). Both servers run in the foreground as children of the test and
are stopped on exit. `require()` fails the test under CI when a program is missing.
"""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path
from types import TracebackType

from support.tools import free_port, require, wait_for_port

__all__ = ["CHILDREN", "NSEC3_PARENTS", "DnssecTree"]

ANCHOR_ZONE = "dkimtest."
CHILDREN = (
    "signed",
    "unsigned",
    "tampered",
    "expired",
    "stripped",
    "unsigned.nsec3",
    "unsigned.optout",
)
#: the signed NSEC3 parents of the last two, and the ldns-signzone flags each is signed with
NSEC3_PARENTS = {"nsec3": ("-n",), "optout": ("-n", "-p")}
#: CNAMEs in signed.dkimtest. to key records: one into the signed zone, one into the
#: unsigned one (a chain is as strong as its weakest link)
ALIASES = (
    ("secure-alias._domainkey", "sel._domainkey.signed.dkimtest."),
    ("insecure-alias._domainkey", "sel._domainkey.unsigned.dkimtest."),
)
SELECTOR = "sel"


def _txt(record: str) -> str:
    chunks = [record[i : i + 200] for i in range(0, len(record), 200)]
    return " ".join(f'"{c}"' for c in chunks)


class DnssecTree:
    def __init__(self, workdir: Path, key_record: str) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.key_record = key_record
        self.ldns_keygen = require("ldns-keygen")
        self.ldns_signzone = require("ldns-signzone")
        self.ldns_key2ds = require("ldns-key2ds")
        self.nsd = require("nsd")
        self.unbound = require("unbound")
        self.nsd_port = 0
        self.unbound_port = 0
        self.anchor_file = workdir / "anchor.ds"
        self._procs: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def key_name(child: str) -> str:
        return f"{SELECTOR}._domainkey.{child}.dkimtest"

    # -- building --

    def _run(self, *argv: str) -> str:
        done = subprocess.run(
            argv, cwd=self.dir, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def _keygen(self, zone: str) -> str:
        return self._run(self.ldns_keygen, "-a", "ECDSAP256SHA256", "-k", zone).strip()

    def _ds(self, key: str) -> str:
        return self._run(self.ldns_key2ds, "-n", "-2", f"{key}.key").strip()

    def _sign(self, zone: str, text: str, key: str, *dates: str) -> Path:
        source = self.dir / f"{zone}zone"
        source.write_text(text)
        self._run(self.ldns_signzone, *dates, "-f", f"{zone}signed", str(source), key)
        return self.dir / f"{zone}signed"

    def _zone_text(self, zone: str, body: str) -> str:
        return (
            f"$ORIGIN {zone}\n$TTL 300\n"
            f"@ IN SOA ns.dkimtest. admin.dkimtest. 1 3600 600 86400 300\n"
            f"@ IN NS ns.dkimtest.\n{body}"
        )

    def build(self) -> None:
        signed_children = [c for c in CHILDREN if c != "unsigned" and "." not in c]
        keys = {c: self._keygen(f"{c}.dkimtest.") for c in [*signed_children, *NSEC3_PARENTS]}
        parent_key = self._keygen(ANCHOR_ZONE)
        key_rr = f"{SELECTOR}._domainkey IN TXT {_txt(self.key_record)}\n"
        files: dict[str, Path] = {}
        for child in CHILDREN:
            zone = f"{child}.dkimtest."
            text = self._zone_text(zone, key_rr)
            if child == "signed":
                text += "".join(f"{alias} IN CNAME {target}\n" for alias, target in ALIASES)
            if child not in keys:
                (self.dir / f"{zone}signed").write_text(text)
                files[zone] = self.dir / f"{zone}signed"
            elif child == "expired":
                files[zone] = self._sign(
                    zone, text, keys[child], "-i", "20190101000000", "-e", "20200101000000"
                )
            else:
                files[zone] = self._sign(zone, text, keys[child])
        _tamper_txt_rrsig(files["tampered.dkimtest."])
        _tamper_txt_rrsig(files["stripped.dkimtest."], remove=True)
        for parent, flags in NSEC3_PARENTS.items():
            zone = f"{parent}.dkimtest."
            # A signed name beside the unsigned delegation, so the NSEC3 chain has two ends.
            body = "www IN A 127.0.0.1\nunsigned IN NS ns.dkimtest.\n"
            files[zone] = self._sign(zone, self._zone_text(zone, body), keys[parent], *flags)
        delegations = "ns IN A 127.0.0.1\n"
        for child in [*CHILDREN, *NSEC3_PARENTS]:
            if "." in child:
                continue
            delegations += f"{child} IN NS ns.dkimtest.\n"
            if child in keys:
                delegations += self._ds(keys[child]) + "\n"
        files[ANCHOR_ZONE] = self._sign(
            ANCHOR_ZONE, self._zone_text(ANCHOR_ZONE, delegations), parent_key
        )
        self.anchor_file.write_text(self._ds(parent_key) + "\n")
        self._zone_files = files

    # -- serving --

    def _start(self, argv: list[str], port: int, log: Path) -> None:
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT)
        self._procs.append(proc)
        if not wait_for_port("127.0.0.1", port, timeout=20):
            raise RuntimeError(f"{argv[0]} did not start: {log.read_text()[-2000:]}")

    def serve(self) -> None:
        self.nsd_port = free_port()
        zones = "".join(
            f"zone:\n    name: {zone}\n    zonefile: {path}\n"
            for zone, path in self._zone_files.items()
        )
        nsd_conf = self.dir / "nsd.conf"
        nsd_conf.write_text(
            "server:\n"
            f"    ip-address: 127.0.0.1@{self.nsd_port}\n"
            f"    port: {self.nsd_port}\n"
            "    server-count: 1\n"
            # No response rate limiting: every test asks the same names from 127.0.0.1.
            "    rrl-ratelimit: 0\n"
            '    username: ""\n'
            '    chroot: ""\n'
            f'    zonesdir: "{self.dir}"\n'
            '    database: ""\n'
            f'    zonelistfile: "{self.dir}/zone.list"\n'
            f'    xfrdfile: "{self.dir}/xfrd.state"\n'
            f'    xfrdir: "{self.dir}"\n'
            f'    pidfile: "{self.dir}/nsd.pid"\n'
            f'    logfile: "{self.dir}/nsd.log"\n'
            "    verbosity: 1\n"
            "remote-control:\n    control-enable: no\n" + zones
        )
        self._start([self.nsd, "-d", "-c", str(nsd_conf)], self.nsd_port, self.dir / "nsd.out")
        self.unbound_port = free_port()
        unbound_conf = self.dir / "unbound.conf"
        unbound_conf.write_text(self.resolver_config(self.unbound_port))
        self._start(
            [self.unbound, "-d", "-c", str(unbound_conf)],
            self.unbound_port,
            self.dir / "unbound.out",
        )

    def resolver_config(self, port: int | None) -> str:
        """An unbound.conf for a validating resolver of this tree (listening on `port`;
        None: for libunbound, which listens nowhere)."""
        listen = f"    interface: 127.0.0.1@{port}\n    port: {port}\n" if port is not None else ""
        return (
            "server:\n" + listen + "    do-daemonize: no\n"
            '    username: ""\n'
            '    chroot: ""\n'
            f'    directory: "{self.dir}"\n'
            f'    pidfile: "{self.dir}/unbound-{port}.pid"\n'
            "    use-syslog: no\n"
            "    verbosity: 1\n"
            "    do-not-query-localhost: no\n"
            "    access-control: 127.0.0.0/8 allow\n"
            "    qname-minimisation: no\n"
            "    ede: yes\n"
            "    val-log-level: 2\n"
            f'    trust-anchor-file: "{self.anchor_file}"\n'
            "remote-control:\n    control-enable: no\n"
            # Every zone of the tree is a stub to nsd: following its NS (ns.dkimtest.) the
            # resolver would look for it on port 53.
            + "".join(
                f'stub-zone:\n    name: "{zone}"\n    stub-addr: 127.0.0.1@{self.nsd_port}\n'
                for zone in self._zone_files
            )
        )

    def __enter__(self) -> DnssecTree:
        try:
            self.build()
            self.serve()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for proc in self._procs:
            proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _tamper_txt_rrsig(path: Path, *, remove: bool = False) -> None:
    """Flip one byte of the signature of the key record's RRSIG (the data stays intact),
    or take the RRSIG out."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        fields = line.split()
        if len(fields) > 5 and fields[3] == "RRSIG" and fields[4] == "TXT":
            if remove:
                del lines[i]
                path.write_text("\n".join(lines) + "\n")
                return
            signature = base64.b64decode("".join(fields[12:]))
            altered = bytes([signature[0] ^ 0x01]) + signature[1:]
            fields[12:] = [base64.b64encode(altered).decode("ascii")]
            lines[i] = "\t".join(fields)
            path.write_text("\n".join(lines) + "\n")
            return
    raise RuntimeError(f"no RRSIG over TXT in {path}")
