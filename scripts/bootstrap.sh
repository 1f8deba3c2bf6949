#!/usr/bin/env bash
# Shared by run-demo.sh and test.sh: system packages and the project's virtualenv.
# Usage: source scripts/bootstrap.sh [runtime|test]
set -euo pipefail

DKIMD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DKIMD_VENV:-$DKIMD_ROOT/.venv}"
profile="${1:-runtime}"

apt_packages=(python3 python3-venv python3-pip ca-certificates)
if [ "$profile" = "test" ]; then
    # The real peers the tests run against: Postfix (SMTP and sendmail paths),
    # OpenDKIM and its tools (genkey, testkey, miltertest) as the interop oracle; the opendkim
    # package also creates the opendkim user the privilege-drop tests switch to.
    # systemd for systemd-analyze, which checks packaging/dkimd.service, and for
    # systemd-socket-activate, which hands dkimd its socket as systemd does.
    apt_packages+=(postfix opendkim opendkim-tools miltertest procps systemd)
    # A signed DNS tree on loopback for the DNSSEC tests: nsd (authoritative), unbound
    # (validating resolver), ldnsutils (ldns-keygen, ldns-signzone to sign the zones).
    apt_packages+=(nsd unbound ldnsutils)
    # Prometheus (and promtool): the metrics tests check the alert rules and scrape dkimd
    # with the real server.
    apt_packages+=(prometheus)
    # Perl's Mail::DKIM, whose ARC signer and verifier are the second independent ARC
    # implementation the interop tests check dkimd against (dkimpy is the first).
    apt_packages+=(libmail-dkim-perl)
    # Remote data sets (dkimd.stores): private memcached, redis-server and slapd instances
    # (ldap-utils for looking at them by hand; the tests need only slapd/slapadd);
    # libmemcached-tools' memccp writes a memcache: table as OpenDKIM's client would.
    apt_packages+=(memcached redis-server slapd ldap-utils libmemcached-tools)
    # dsn: data sets (dkimd.stores.dsn): private PostgreSQL and MariaDB servers started by
    # the test fixtures (tests/support/sqlservers.py).
    apt_packages+=(postgresql mariadb-server)
    # OpenDBX's sqlite3 and pgsql back ends, through which the real OpenDKIM reads a dsn:
    # data set in the differential test (tests/interop/test_dsn_differential.py).
    apt_packages+=(libopendbx1-sqlite3 libopendbx1-pgsql)
fi

missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Postfix asks how to configure itself; the tests run private instances, so none.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    # Nor a system directory from slapd: the tests run their own, on private ports.
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
if [ "$profile" = "test" ]; then
    "$VENV/bin/python" -m pip install -q -e "$DKIMD_ROOT[test,lua]"
else
    "$VENV/bin/python" -m pip install -q "$DKIMD_ROOT"
fi
export PATH="$VENV/bin:$PATH"

if [ "$profile" = "test" ]; then
    # The inet6 socket tests bind [::1]; some containers start with IPv6 off on loopback.
    lo_v6=/proc/sys/net/ipv6/conf/lo/disable_ipv6
    if [ -r "$lo_v6" ] && [ "$(cat "$lo_v6")" = "1" ]; then
        if [ "$(id -u)" -eq 0 ] && sysctl -qw net.ipv6.conf.lo.disable_ipv6=0 2>/dev/null; then
            echo "bootstrap: enabled IPv6 on loopback for the inet6 tests" >&2
        else
            echo "bootstrap: IPv6 is off on loopback and cannot be enabled here;" \
                "the inet6 tests will skip (fail under CI)" >&2
        fi
    fi
fi
