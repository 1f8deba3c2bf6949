#!/usr/bin/env bash
# Installs dkimd into .venv and runs the milter in the foreground on a self-contained demo
# config (a freshly generated key for example.com, selector "mail") on 127.0.0.1:8891.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh runtime

demo="$DKIMD_ROOT/demo"
mkdir -p "$demo/keys"
chmod 700 "$demo/keys"
if [ ! -f "$demo/keys/mail.private" ]; then
    dkimd genkey -b 2048 -d example.com -s mail -D "$demo/keys"
fi
# The demo's own DNS: dkimd verifies against this file instead of real DNS (TestDNSData).
record=$(sed -n 's/.*"\(.*\)".*/\1/p' "$demo/keys/mail.txt" | tr -d '\n')
printf 'mail._domainkey.example.com %s\n' "$record" >"$demo/dns.txt"
cat >"$demo/KeyTable" <<KT
mail._domainkey.example.com    example.com:mail:$demo/keys/mail.private
KT
cat >"$demo/SigningTable" <<ST
*@example.com                  mail._domainkey.example.com
*@*.example.com                mail._domainkey.example.com
ST
cat >"$demo/TrustedHosts" <<TH
127.0.0.1
::1
localhost
TH
cat >"$demo/opendkim.conf" <<CONF
# dkimd demo: the seed recipe's /etc/opendkim.conf with paths pointed at ./demo
Canonicalization        relaxed/relaxed
ExternalIgnoreList      refile:$demo/TrustedHosts
InternalHosts           refile:$demo/TrustedHosts
KeyTable                refile:$demo/KeyTable
SigningTable            refile:$demo/SigningTable
LogWhy                  Yes
MinimumKeyBits          1024
Mode                    sv
PidFile                 $demo/dkimd.pid
Socket                  inet:8891@127.0.0.1
Syslog                  No
SyslogSuccess           Yes
UMask                   022
Background              No
TestDNSData             file:$demo/dns.txt
CONF

dkimd check -x "$demo/opendkim.conf" || true
cat <<MSG

dkimd demo: signing mail from *@example.com with $demo/keys/mail.private
Point Postfix at it (append to /etc/postfix/main.cf, then 'postfix reload'):
    milter_default_action = accept
    milter_protocol = 6
    smtpd_milters = inet:127.0.0.1:8891
    non_smtpd_milters = inet:127.0.0.1:8891
Publish $demo/keys/mail.txt in DNS for real use. Stop with Ctrl-C.

MSG
exec dkimd -x "$demo/opendkim.conf" -f
