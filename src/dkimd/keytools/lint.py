"""`dkimd check`: everything wrong with a configuration, then what it will actually do.

The configuration loader already reports what it can see in the files (unknown options
with a "did you mean", bad values, missing or malformed data sets, SigningTable entries
naming keys the KeyTable lacks, host list entries that are not hosts or networks). This
module adds what needs the rest of the system: the key files themselves (loadable, safe
for the filter's user, long enough), the socket (can it be bound?), the users, the pid
file directory, InternalHosts against where Postfix connects from, and Postfix's own
milter settings. Every finding is a `Problem` with a place and, where one exists, a fix.

The summary is plain language: which senders get signed with which d=/s=/algorithm/bits,
whose mail is signed, whose is verified, whose is not looked at.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from dkimd.chroot import path_in_root
from dkimd.config import Config, ConfigReport, DatasetKind, HostList, Mode, Problem, Severity
from dkimd.config.arc import arc_summary
from dkimd.config.keytable import KeyTableEntry
from dkimd.config.load import daemon_refusals
from dkimd.dkim.errors import KeyLoadError
from dkimd.dkim.keys import PrivateKey, load_private_key, load_private_key_file
from dkimd.dns.zonetext import ZoneSyntaxError, entry_start
from dkimd.keytools.context import filter_uid
from dkimd.keytools.keyfile import check_key_file
from dkimd.keytools.lint_process import process_problems
from dkimd.keytools.socket_holder import Holder, dkimd_holder, tcp_listeners, unix_listeners

# Where Postfix hands mail to the milter from: locally submitted mail (sendmail(1),
# non_smtpd_milters) always arrives as the loopback client.
LOOPBACK = ("127.0.0.1", "::1")

PostconfRunner = Callable[[list[str]], str | None]


def run_postconf(names: list[str]) -> str | None:
    """`postconf -h NAME...` output, or None without a usable postconf."""
    postconf = shutil.which("postconf") or (
        "/usr/sbin/postconf" if os.access("/usr/sbin/postconf", os.X_OK) else None
    )
    if postconf is None:
        return None
    try:
        done = subprocess.run(
            [postconf, "-h", *names], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@dataclass
class KeyInfo:
    """What we learned about one KeyTable (or KeyFile) key, for problems and the summary."""

    name: str
    domain: str
    selector: str
    source: str  # the file, or "inline in the KeyTable"
    key: PrivateKey | None = None
    refused: str | None = None  # why the filter will not use a key it could load


@dataclass
class LintReport:
    problems: list[Problem] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]


class _Linter:
    def __init__(self, report: ConfigReport, postconf: PostconfRunner | None) -> None:
        self.report = report
        self.config = report.config
        self.postconf = postconf
        # The daemon starts with a problem that fails messages (OpenDKIM does); for the
        # admin asking what is wrong it is an error all the same.
        self.out = LintReport(
            [
                replace(p, severity=Severity.ERROR) if p.fails_messages else p
                for p in report.problems
            ]
        )
        self.keys: dict[str, KeyInfo] = {}
        self.serving: str | None = None  # the Socket, when our own running daemon holds it

    def add(
        self,
        severity: Severity,
        where: tuple[str | None, int | None],
        message: str,
        hint: str | None = None,
        option: str | None = None,
    ) -> None:
        self.out.problems.append(Problem(where[0], where[1], severity, message, hint, option))

    def setting_place(self, name: str) -> tuple[str | None, int | None]:
        setting = self.report.raw.get(name)
        if setting is None:
            files = self.report.raw.files
            return (files[0] if files else None, None)
        return (setting.file, setting.line)

    # --- keys -------------------------------------------------------------------------

    def check_keys(self, config: Config) -> None:
        uid = filter_uid(config)
        entries: list[tuple[KeyTableEntry | None, str, str, str | None, bytes | None]] = []
        if config.key_table is not None:
            for row in config.key_table:
                entries.append((row, row.domain, row.selector, row.key_path, row.key_data))
        elif config.single_key is not None:
            single = config.single_key
            for domain in single.domains.keys() or ["(Domain)"]:
                entries.append((None, domain, single.selector, single.key_file, None))
        for entry, domain, selector, path, data in entries:
            name = entry.name if entry is not None else f"{selector}._domainkey.{domain}"
            where = (entry.file, entry.line) if entry is not None else self.setting_place("KeyFile")
            info = KeyInfo(name, domain, selector, path or "inline in the KeyTable")
            self.keys[name] = info
            if path is not None and "%" in path:
                if domain == "%":
                    continue  # depends on the sender; nothing to open now
                path = path.replace("%", domain)
            if path is not None and not os.path.exists(path):
                continue  # the configuration loader has reported it
            info.key = self.load_key(where, name, path, data)
            if info.key is None:
                continue
            if path is not None:
                self.check_safety(where, name, path, uid, config.require_safe_keys, info)
                self.check_readable(where, name, path, uid, info)
            algorithm = entry.algorithm if entry is not None else None
            self.check_size(where, name, info.key, config, algorithm)

    def load_key(
        self, where: tuple[str | None, int | None], name: str, path: str | None, data: bytes | None
    ) -> PrivateKey | None:
        try:
            if path is not None:
                return load_private_key_file(path)
            assert data is not None
            return load_private_key(data)
        except KeyLoadError as exc:
            self.add(
                Severity.ERROR,
                where,
                f'key "{name}": {exc}',
                "point it at a PEM private key, e.g. one made by `dkimd genkey`",
                "KeyTable",
            )
            return None

    def check_safety(
        self,
        where: tuple[str | None, int | None],
        name: str,
        path: str,
        uid: int | None,
        required: bool,
        info: KeyInfo,
    ) -> None:
        safety = check_key_file(path, uid)
        if safety.safe:
            return
        who = "the filter's user" if uid is not None else "this user"
        hint = f"chmod 600 {path}; chown it to {who}; keep its directories writable only by root"
        if required:
            info.refused = "refused as unsafe"
            self.add(
                Severity.ERROR,
                where,
                f'key "{name}" is not safe, so the filter (RequireSafeKeys yes) will refuse '
                f"it: {'; '.join(safety.problems)}",
                hint,
                "RequireSafeKeys",
            )
        else:
            self.add(
                Severity.WARNING,
                where,
                f'key "{name}" is not safe: {"; ".join(safety.problems)}',
                hint,
                "RequireSafeKeys",
            )

    def check_readable(
        self,
        where: tuple[str | None, int | None],
        name: str,
        path: str,
        uid: int | None,
        info: KeyInfo,
    ) -> None:
        # KeyTable keys are read when a message is signed, after the filter has switched
        # to UserID: a key only root can read is a key that never signs.
        if uid is None or uid == 0:
            return
        blocked = unreadable_by(uid, path)
        if blocked is None:
            return
        user = _user_name(uid)
        info.refused = f"unreadable by {user}"
        self.add(
            Severity.ERROR,
            where,
            f'key "{name}": the filter runs as {user} (UserID), who cannot read {blocked}',
            f"chown {user} {path} (keep it mode 600), and let {user} search its directories",
            "UserID",
        )

    def check_size(
        self,
        where: tuple[str | None, int | None],
        name: str,
        key: PrivateKey,
        config: Config,
        algorithm: str | None = None,
    ) -> None:
        if algorithm is not None and not algorithm.startswith(key.key_type + "-"):
            self.add(
                Severity.ERROR,
                where,
                f'key "{name}" is {key.key_type} but its KeyTable entry names {algorithm}: '
                "messages signed with it are tempfailed",
                "name the algorithm of the key, or drop the fourth field",
                "KeyTable",
            )
            return
        if key.key_type != "rsa":
            # A KeyTable fourth field chooses per key; only SignatureAlgorithm can disagree.
            if algorithm is None and not config.signature_algorithm.startswith(key.key_type):
                self.add(
                    Severity.WARNING,
                    where,
                    f'key "{name}" is {key.key_type}; signatures will be '
                    f"{key.algorithm}, not the configured {config.signature_algorithm}",
                    option="SignatureAlgorithm",
                )
            return
        if key.bits < 1024:
            self.add(
                Severity.ERROR,
                where,
                f'key "{name}" is {key.bits} bits: verifiers reject RSA keys under 1024 bits '
                "(RFC 8301)",
                "make a new key: dkimd genkey -b 2048, publish it, and switch the selector",
                "KeyTable",
            )
        elif key.bits < config.minimum_key_bits:
            self.add(
                Severity.WARNING,
                where,
                f'key "{name}" is {key.bits} bits, under MinimumKeyBits '
                f"({config.minimum_key_bits}): verifiers with the same policy will reject it",
                "make a longer key with dkimd genkey -b 2048",
                "MinimumKeyBits",
            )

    def check_unused_keys(self, config: Config) -> None:
        if config.key_table is None or config.signing_table is None:
            return
        named = {
            (entry.value or "").partition(":")[0] for entry in config.signing_table.dataset.entries
        }
        if "%" in named:
            return  # "%" can name any key
        for entry in config.key_table:
            if (
                entry.name not in named
                and config.signing_table.dataset.kind is not DatasetKind.REFILE
            ):
                continue  # exact-key tables: unused keys are common (rotations); say nothing
            if entry.name not in named:
                self.add(
                    Severity.WARNING,
                    (entry.file, entry.line),
                    f'KeyTable key "{entry.name}" is not used by any SigningTable entry',
                    "remove it, or add a SigningTable line naming it",
                    "KeyTable",
                )

    # --- daemon ---------------------------------------------------------------------------

    def check_socket(self, config: Config) -> None:
        spec = config.socket
        where = self.setting_place("Socket")
        if spec is None:
            # The daemon then needs -p; OpenDKIM refuses to start without either.
            self.add(
                Severity.WARNING,
                where,
                "no Socket is set",
                "set Socket, or give one with -p",
                "Socket",
            )
            return
        if spec.family == "local":
            assert spec.path is not None
            # bound after ChangeRootDirectory: a path inside it
            path = path_in_root(config.change_root_directory, spec.path)
            directory = os.path.dirname(path) or "."
            if not os.path.isdir(directory):
                self.add(
                    Severity.ERROR,
                    where,
                    f"Socket: directory {directory} does not exist",
                    f"create it (mkdir -p {directory}), owned by the filter's user",
                    "Socket",
                )
            elif os.path.exists(path):
                self.check_local_in_use(where, path, config)
            return
        host = spec.host or ("0.0.0.0" if spec.family == "inet" else "::")
        family = socket.AF_INET if spec.family == "inet" else socket.AF_INET6
        try:
            port = (
                spec.port
                if isinstance(spec.port, int)
                else socket.getservbyname(str(spec.port), "tcp")
            )
            infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except OSError as exc:
            self.add(
                Severity.ERROR,
                where,
                f'Socket: cannot resolve "{spec}": {exc.strerror or exc}',
                "use an address (127.0.0.1) or a name in /etc/hosts",
                "Socket",
            )
            return
        shown = f"{host} port {port}"
        address = infos[0][4]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    holder = dkimd_holder(config.pid_file, tcp_listeners(str(address[0]), port))
                    self.socket_in_use(where, shown, config, holder)
                else:
                    self.socket_problem(where, shown, port, exc)

    def socket_in_use(
        self, where: tuple[str | None, int | None], shown: str, config: Config, holder: Holder
    ) -> None:
        """A socket someone listens on: fine when it is our own running daemon."""
        if holder is Holder.DKIMD:
            self.serving = f"{shown} is served by the running dkimd (PidFile {config.pid_file})."
            return
        if holder is Holder.UNCONFIRMED:
            self.add(
                Severity.WARNING,
                where,
                f"Socket: {shown} is in use, probably by the running dkimd that PidFile "
                f"{config.pid_file} names",
                "run dkimd check as root to confirm it",
                "Socket",
            )
            return
        self.add(
            Severity.WARNING,
            where,
            f"Socket: {shown} is in use",
            "if that is OpenDKIM, stop it before starting dkimd (systemctl stop "
            "opendkim); otherwise pick another port and change Postfix's smtpd_milters "
            "to match",
            "Socket",
        )

    def socket_problem(
        self, where: tuple[str | None, int | None], shown: str, port: int, exc: OSError
    ) -> None:
        if exc.errno == errno.EACCES:
            self.add(
                Severity.WARNING,
                where,
                f"Socket: port {port} needs root to bind",
                "use a port above 1023",
                "Socket",
            )
        else:
            self.add(
                Severity.ERROR,
                where,
                f"Socket: cannot bind {shown}: {exc.strerror}",
                "use an address this host has (127.0.0.1 for a local Postfix)",
                "Socket",
            )

    def check_local_in_use(
        self, where: tuple[str | None, int | None], path: str, config: Config
    ) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(path)
            except OSError:
                return  # a stale socket file: the daemon removes and recreates it
        holder = dkimd_holder(config.pid_file, unix_listeners(path))
        if holder is Holder.DKIMD:
            self.serving = f"{path} is served by the running dkimd (PidFile {config.pid_file})."
            return
        self.add(
            Severity.WARNING,
            where,
            f"Socket: something is already listening on {path}",
            "stop the running filter (OpenDKIM?) before starting dkimd",
            "Socket",
        )

    def check_user(self, config: Config) -> None:
        if config.user_id is None:
            return
        where = self.setting_place("UserID")
        user, group = config.user_id.user, config.user_id.group
        if not user.isdigit():
            try:
                pwd.getpwnam(user)
            except KeyError:
                self.add(
                    Severity.ERROR,
                    where,
                    f'UserID: no user "{user}" on this system',
                    f"create it (adduser --system {user}) or name an existing user",
                    "UserID",
                )
        if group is not None and not group.isdigit():
            try:
                grp.getgrnam(group)
            except KeyError:
                self.add(
                    Severity.ERROR,
                    where,
                    f'UserID: no group "{group}" on this system',
                    f"create it (addgroup --system {group}) or name an existing group",
                    "UserID",
                )

    def check_test_dns_data(self, config: Config) -> None:
        """TestDNSData holds OpenDKIM's NAME RECORD lines; a pasted SELECTOR.txt is not that.

        opendkim (and dkimd, keeping its meaning) would publish `IN TXT ( "v=DKIM1; ..."`
        under the name `mail._domainkey`, so no key is ever found. `--dns-file` on the
        command line reads both forms; this option does not.
        """
        if config.test_dns_data is None:
            return
        for entry in config.test_dns_data.entries:
            line = f"{entry.key} {entry.value or ''}".encode("utf-8", "surrogateescape")
            try:
                zone_form = entry_start(line) is not None
            except ZoneSyntaxError:
                zone_form = True
            if zone_form:
                text = " ".join((entry.value or "").split())
                self.add(
                    Severity.WARNING,
                    (entry.file, entry.line),
                    f'TestDNSData: "{entry.key} ..." is a zone-file record; TestDNSData takes '
                    "NAME RECORD lines, so it is read as a record named "
                    f'"{entry.key}" with the text "{text[:24]}..."',
                    "write one line per key: mail._domainkey.example.com v=DKIM1; k=rsa; p=... "
                    "(the strings of the TXT record, joined)",
                    "TestDNSData",
                )

    def check_pid_file(self, config: Config) -> None:
        if config.pid_file is None:
            return
        # written after ChangeRootDirectory: a path inside it
        pid_file = path_in_root(config.change_root_directory, config.pid_file)
        directory = os.path.dirname(pid_file) or "."
        if not os.path.isdir(directory):
            self.add(
                Severity.WARNING,
                self.setting_place("PidFile"),
                f"PidFile: directory {directory} does not exist",
                f"create it at boot (systemd RuntimeDirectory=, or mkdir -p {directory})",
                "PidFile",
            )

    def check_inert_options(self, config: Config) -> None:
        """Options OpenDKIM 2.11 accepts that change nothing there, and so nothing here
        (dkimd.config.options, docs/opendkim-behaviour.md 5.3-5.4): worth a word to the
        admin who set them for an effect."""
        inert: list[tuple[str, bool, str]] = [
            (
                "AllowSHA1Only",
                config.allow_sha1_only,
                "only lets a build without SHA-256 start; rsa-sha1 signatures are AllowSHA1's "
                "business",
            ),
            (
                "SelectCanonicalizationHeader",
                self.report.raw.get("SelectCanonicalizationHeader") is not None,
                "OpenDKIM 2.11 signs with Canonicalization whatever that header field says, "
                "and so does dkimd",
            ),
            (
                "Minimum",
                config.minimum is not None,
                "a signature covering less still passes and the message is accepted, as in "
                "OpenDKIM 2.11; dkimd logs it",
            ),
            (
                "WeakSyntaxChecks",
                config.weak_syntax_checks and config.signs,
                "it only matters in Mode v: with s, an unparseable From stops the message first",
            ),
            (
                "CheckSigningTable",
                config.check_signing_table
                and any(
                    table is not None and table.dataset.kind is DatasetKind.REMOTE
                    for table in (config.key_table, config.signing_table)
                ),
                "tables on a server are never walked at start; dkimd check --walk checks them",
            ),
        ]
        for option, set_, why in inert:
            if set_:
                self.add(
                    Severity.WARNING,
                    self.setting_place(option),
                    f"{option} has no effect: {why}",
                    None,
                    option,
                )

    # --- who gets signed -----------------------------------------------------------------------

    def check_internal_hosts(self, config: Config) -> None:
        if Mode.SIGN not in config.mode or config.internal_hosts.dataset.kind is DatasetKind.REMOTE:
            return  # behind a server: asked per client by the daemon, not here
        if any(config.internal_hosts.matches(address, None) for address in LOOPBACK):
            return
        self.add(
            Severity.WARNING,
            self.setting_place("InternalHosts"),
            "InternalHosts contains neither 127.0.0.1 nor ::1: mail Postfix submits locally "
            "(sendmail, non_smtpd_milters) and mail relayed over loopback will be verified "
            "instead of signed",
            "add 127.0.0.1 and ::1 to the InternalHosts data set",
            "InternalHosts",
        )

    def check_postfix(self, config: Config) -> None:
        if self.postconf is None or config.socket is None:
            return
        output = self.postconf(["smtpd_milters", "non_smtpd_milters"])
        if output is None:
            return
        lines = [*output.splitlines(), "", ""][:2]
        ours = config.socket
        for name, value in zip(("smtpd_milters", "non_smtpd_milters"), lines, strict=True):
            milters = [m for m in value.replace(",", " ").replace("{", " ").split() if ":" in m]
            if not milters:
                if name == "smtpd_milters":
                    self.add(
                        Severity.WARNING,
                        ("postconf", None),
                        "Postfix's smtpd_milters is empty: Postfix will not pass mail to dkimd",
                        f"postconf -e 'smtpd_milters = {_postfix_form(ours)}' and the same "
                        "for non_smtpd_milters",
                        "Socket",
                    )
                continue
            if not any(_same_socket(m, ours) for m in milters):
                self.add(
                    Severity.WARNING,
                    ("postconf", None),
                    f"Postfix's {name} ({value.strip()}) does not point at Socket {ours}",
                    f"make them agree: postconf -e '{name} = {_postfix_form(ours)}'",
                    "Socket",
                )

    # --- summary ---------------------------------------------------------------------------

    def summarize(self, config: Config) -> None:
        lines = self.out.summary
        modes = []
        if Mode.SIGN in config.mode:
            modes.append("signs outgoing mail")
        if Mode.VERIFY in config.mode:
            modes.append("verifies incoming mail")
        lines.append("dkimd " + (" and ".join(modes) or "neither signs nor verifies (Mode)") + ".")
        if self.serving is not None:
            lines.append(f"Socket {self.serving}")
        if Mode.SIGN in config.mode:
            lines += self.signing_lines(config)
            lines.append(
                "Mail is signed when it comes from a client in InternalHosts ("
                + _hosts_text(config.internal_hosts)
                + ") and its sender matches the above."
            )
        if Mode.VERIFY in config.mode:
            lines.append("Mail from every other client is verified.")
        if config.arc is not None:
            lines.append(arc_summary(config.arc))
        if len(config.peer_list):
            lines.append(
                "Clients in PeerList (" + _hosts_text(config.peer_list) + ") are passed through "
                "untouched: neither signed nor verified."
            )
        if len(config.external_ignore_list):
            lines.append(
                "ExternalIgnoreList (" + _hosts_text(config.external_ignore_list) + "): mail "
                "from these hosts that claims a signed domain is not logged as a forgery."
            )

    def signing_lines(self, config: Config) -> list[str]:
        lines: list[str] = []
        if config.signing_table is not None and config.key_table is not None:
            table = config.signing_table.dataset
            order = "first match wins" if not config.multiple_signatures else "every match signs"
            lines.append(f"Senders signed ({table.describe()}, {order}):")
            for entry in table.entries:
                key_name, _, signer = (entry.value or "").partition(":")
                lines.append(
                    f"  {entry.key:<28} -> {self.key_text(key_name, config)}"
                    + (f", i={signer}" if signer else "")
                )
            if table.kind is DatasetKind.LUA:
                lines.append("  (as the Lua script answers for each sender)")
            elif table.kind is DatasetKind.REMOTE:
                lines.append("  (a database table, read per message; --walk lists every row)")
            elif not table.entries:
                lines.append("  (none: the SigningTable is empty)")
        elif config.single_key is not None:
            single = config.single_key
            domains = ", ".join(single.domains.keys()) or "(no Domain)"
            scope = " and their subdomains" if single.subdomains else ""
            name = f"{single.selector}._domainkey.{(single.domains.keys() or ['?'])[0]}"
            lines.append(
                f"Mail from {domains}{scope} is signed with {self.key_text(name, config)}."
            )
        else:
            lines.append("No keys are configured: nothing will be signed.")
        return lines

    def key_text(self, key_name: str, config: Config) -> str:
        if key_name == "%":
            return "the KeyTable key named after the sender's domain"
        info = self.keys.get(key_name)
        key_table = config.key_table
        if info is None and key_table is not None and key_table.dataset.kind is DatasetKind.REMOTE:
            # Only a lookup would tell (check --walk does): say where it is looked up.
            return f'key "{key_name}" (looked up in {key_table.dataset.describe()})'
        if info is None:
            if config.key_table is not None and config.key_table.broken(key_name):
                return f'key "{key_name}" (BROKEN KEYTABLE ENTRY: mail tempfailed)'
            return f'key "{key_name}" (NOT IN THE KEYTABLE: mail tempfailed)'
        domain = "the sender's domain" if info.domain == "%" else info.domain
        if info.key is None:
            state = "key missing or unreadable: NOT SIGNED"
        else:
            algorithm = (
                info.key.algorithm
                if info.key.key_type == "ed25519"
                else (config.signature_algorithm)
            )
            state = f"{algorithm}, {info.key.bits} bits"
            if info.refused:
                state += f", {info.refused}: NOT SIGNED"
        return f"d={domain} s={info.selector} ({state}; {info.source})"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def unreadable_by(uid: int, path: str) -> str | None:
    """The first component of `path` user `uid` cannot get through (search a directory,
    read the file), judged from permission bits; None when it can read the file."""
    try:
        entry = pwd.getpwuid(uid)
        groups = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except KeyError:
        groups = set()
    real = os.path.realpath(path)
    parts = real.split("/")
    nodes = ["/".join(parts[:i]) or "/" for i in range(1, len(parts))] + [real]
    for node in nodes:
        try:
            st = os.stat(node)
        except OSError:
            return node
        want = 4 if node == real else 1  # read the file, search the directories
        if st.st_uid == uid:
            bits = (st.st_mode >> 6) & 7
        elif st.st_gid in groups:
            bits = (st.st_mode >> 3) & 7
        else:
            bits = st.st_mode & 7
        if not bits & want:
            return node
    return None


def _hosts_text(hosts: HostList, limit: int = 8) -> str:
    if hosts.dataset.kind is DatasetKind.LUA:
        return f"as {hosts.dataset.spec} answers"
    if hosts.dataset.kind is DatasetKind.REMOTE:
        return "as its data set behind a server answers"  # the spec may hold a password
    keys = [e.key for e in hosts.dataset.entries]
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "") or "empty"


def _postfix_form(spec: object) -> str:
    """Our milter socket as Postfix writes it (inet:host:port, unix:/path)."""
    from dkimd.sockets import SocketSpec

    assert isinstance(spec, SocketSpec)
    if spec.family == "local":
        return f"unix:{spec.path}"
    return f"{spec.family}:{spec.host or 'localhost'}:{spec.port}"


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]", "localhost6", "ip6-localhost"}


def _same_socket(milter: str, spec: object) -> bool:
    from dkimd.sockets import SocketSpec

    assert isinstance(spec, SocketSpec)
    kind, _, rest = milter.partition(":")
    if spec.family == "local":
        # Postfix paths may be relative to its queue directory; compare the file name only.
        return kind in ("unix", "local") and os.path.basename(rest) == os.path.basename(
            spec.path or ""
        )
    if kind not in ("inet", "inet6"):
        return False
    host, _, port = rest.rpartition(":")
    if str(port) != str(spec.port):
        return False
    ours = (spec.host or "").lower()
    theirs = host.strip("[]").lower()
    if not ours:
        return True  # we listen on every address
    return theirs == ours or (theirs in _LOOPBACK_NAMES and ours in _LOOPBACK_NAMES)


def lint(report: ConfigReport, *, postconf: PostconfRunner | None = run_postconf) -> LintReport:
    """Every problem with the configuration behind `report`, plus the plain-language summary.

    Only the loader's problems are reported when it could not build a Config: the other
    checks need the typed values.
    """
    linter = _Linter(report, postconf)
    config = report.config
    if config is None:
        return linter.out
    # The walk's findings are already errors here (fails_messages), whatever CheckSigningTable.
    linter.out.problems += daemon_refusals(config, check_signing_table=False)
    linter.check_keys(config)
    linter.check_unused_keys(config)
    linter.check_socket(config)
    linter.check_user(config)
    linter.check_pid_file(config)
    linter.check_test_dns_data(config)
    linter.check_inert_options(config)
    linter.check_internal_hosts(config)
    linter.check_postfix(config)
    linter.out.problems += process_problems(config, linter.setting_place)
    linter.summarize(config)
    return linter.out
