"""Host lists in a database, with dkimd as the milter of a real, private Postfix.

InternalHosts and PeerList are one `dsn:sqlite3` table each: a listed client's mail is
signed, a peer's passes untouched (Postfix stops talking to the milter after the accept at
connect, which dkimd answers only once the rows are in), an outside client's is verified;
with the tables gone (as with the server down) Postfix answers 4xx, and once they are back
the same daemon signs again without a reload.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from support.dkimd import Dkimd
from support.mail import by_subject, header_values, message
from support.opendkim import DkimKey
from support.postfix import PrivatePostfix
from support.remote_lists import sqlite_url
from support.tools import require

pytestmark = [pytest.mark.e2e, pytest.mark.interop]

PEER = "198.51.100.20"
OUTSIDE = "203.0.113.30"


def test_postfix_with_host_lists_in_sqlite(
    tmp_path: Path, dkim_key: DkimKey, private_postfix: Callable[..., PrivatePostfix]
) -> None:
    require("postfix")
    db = tmp_path / "lists.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE internal (k TEXT, v TEXT);"
        "INSERT INTO internal VALUES ('127.0.0.0/8', ''), ('::1', '');"
        "CREATE TABLE peers (k TEXT, v TEXT);"
        "INSERT INTO peers VALUES ('198.51.100.0/24', ''), ('!198.51.100.66', '');"
    )
    conn.commit()
    conn.close()
    d = Dkimd(
        tmp_path / "dkimd",
        mode="sv",
        domain="example.com",
        selector="mail",
        keyfile=dkim_key.private_key,
        dns_records=dkim_key.records,
        options={
            "InternalHosts": sqlite_url(db, "internal"),
            "PeerList": sqlite_url(db, "peers"),
            "DataSetCacheTTL": "0",
            "DataSetNegativeCacheTTL": "0",
        },
    ).start()
    try:
        pf = private_postfix(milter=d.postfix_milter, milter_protocol=6)
        sends = [
            ("inside", None),
            ("peer", PEER),
            ("negated peer", "198.51.100.66"),
            ("outside", OUTSIDE),
        ]
        for subject, addr in sends:
            code, reply = pf.send_smtp(
                "alice@example.com", "bob@example.net", message(subject), xclient_addr=addr
            )
            assert code == 250, (subject, reply)
        got = by_subject(pf.wait_for_delivery(len(sends), timeout=30))
        assert len(header_values(got["inside"], "DKIM-Signature")) == 1
        for subject in ("peer", "negated peer", "outside"):
            assert header_values(got[subject], "DKIM-Signature") == [], subject
        log = d.log_text()
        assert log.count("(PeerList)") == 1, log  # the peer only, not the negated one

        conn = sqlite3.connect(db)
        conn.execute("ALTER TABLE internal RENAME TO away")  # InternalHosts: at end of headers
        conn.commit()
        code, reply = pf.send_smtp("alice@example.com", "bob@example.net", message("down"))
        assert 400 <= code < 500, reply  # tempfail: the MTA keeps the mail and retries
        conn.execute("ALTER TABLE peers RENAME TO peers_away")  # PeerList: at connect
        conn.commit()
        code, reply = pf.send_smtp("alice@example.com", "bob@example.net", message("down"))
        assert 400 <= code < 500, reply
        conn.execute("ALTER TABLE away RENAME TO internal")
        conn.execute("ALTER TABLE peers_away RENAME TO peers")
        conn.commit()
        conn.close()
        code, reply = pf.send_smtp("alice@example.com", "bob@example.net", message("back"))
        assert code == 250, reply
        back = by_subject(pf.wait_for_delivery(len(sends) + 1, timeout=30))["back"]
        assert len(header_values(back, "DKIM-Signature")) == 1
        assert "down" not in by_subject(pf.delivered())  # refused, not lost: the client keeps it
        assert pf.queue_count() == 0
    finally:
        d.stop()
