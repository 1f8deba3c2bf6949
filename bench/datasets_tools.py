"""`dkimd check`, `check --walk` and `genzone` against KeyTable/SigningTable in PostgreSQL.

    python bench/datasets_tools.py [--signing 1000000] [--keys 10000]

Starts a private PostgreSQL (tests/support/sqlservers.py), fills a SigningTable of
`--signing` rows and a KeyTable of `--keys` rows (all naming one 2048-bit key file, as a
hosting fleet's table often does), then times each tool once, as a subprocess:

* `dkimd check`: one login and one test lookup per table, nothing walked;
* `dkimd check --walk`: both tables read whole, every SigningTable row checked;
* `dkimd genzone -o FILE`: every KeyTable row walked, one record each.

The numbers are for a shared 2-CPU machine; run it twice and keep the lower.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from dkimd.keytools.generate import generate_rsa  # noqa: E402
from support.sqlservers import start_postgres  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signing", type=int, default=1_000_000, help="SigningTable rows")
    parser.add_argument("--keys", type=int, default=10_000, help="KeyTable rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dkimd-bench-tools-") as tmp:
        root = Path(tmp)
        pg = start_postgres(root / "pg")
        try:
            key_file = root / "k.pem"
            key_file.write_bytes(generate_rsa(2048).private_pem)
            key_file.chmod(0o600)
            pg.execute(
                "CREATE TABLE kt (name TEXT PRIMARY KEY, domain TEXT, selector TEXT, k TEXT)",
                "CREATE TABLE st (pattern TEXT PRIMARY KEY, keyname TEXT)",
                "GRANT SELECT ON kt, st TO dkimd",
            )
            pg.copy_rows(
                "kt",
                ("name", "domain", "selector", "k"),
                ((f"k{i}", f"d{i}.example", "s1", str(key_file)) for i in range(args.keys)),
            )
            pg.copy_rows(
                "st",
                ("pattern", "keyname"),
                ((f"d{i}.example", f"k{i % args.keys}") for i in range(args.signing)),
            )
            pg.execute("ANALYZE kt", "ANALYZE st")
            conf = root / "opendkim.conf"
            conf.write_text(
                "Socket inet:8891@127.0.0.1\nRequireSafeKeys no\n"
                f"KeyTable {pg.dsn('kt', 'name', 'domain,selector,k')}\n"
                f"SigningTable {pg.dsn('st', 'pattern', 'keyname')}\n"
            )
            print(f"SigningTable {args.signing:,} rows, KeyTable {args.keys:,} rows (PostgreSQL)")
            for argv in (
                ["check", "-x", str(conf), "--no-postfix", "-q"],
                ["check", "-x", str(conf), "--no-postfix", "-q", "--walk"],
                ["genzone", "-x", str(conf), "-o", str(root / "zone")],
            ):
                started = time.monotonic()
                run = subprocess.run(
                    [sys.executable, "-m", "dkimd", *argv], capture_output=True, text=True
                )
                took = time.monotonic() - started
                shown = " ".join("FILE" if a.startswith("/") else a for a in argv)
                print(f"  dkimd {shown}: exit {run.returncode}, {took:.2f} s")
            records = (root / "zone").read_text().count("\tIN\tTXT\t")
            print(f"  genzone wrote {records:,} records")
        finally:
            pg.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
