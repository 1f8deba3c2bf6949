"""Host lists (PeerList, InternalHosts, ExternalIgnoreList, ArcSealHosts) behind a server.

OpenDKIM matches a host list that is not a file exactly as it matches a file: it turns the
client into a series of keys and asks the data set for each in turn (util.c
dkimf_checkhost, dkimf_checkip), the first key found deciding:

* the host name, then each parent domain with its leading dot (`mx.a.example`, `.a.example`,
  `.example`), each asked as `!key` first and then `key`;
* the address as written by inet_ntop() (IPv6 in lower case), then `[address]`, then every
  network `address/N` and `[address]/N` from the longest prefix down to /0 (the address
  masked to N bits), each again `!` first. An IPv4 client gives 4 + 33 x 4 = 136 keys, an
  IPv6 one 4 + 129 x 4 = 520;
* the host name is tried before the address, and a `!` on the name does not stop the
  address from matching (mlfi_connect: `dkimf_checkhost(...) || dkimf_checkip(...)`).

`dkimd.config.hosts` builds those keys and applies that precedence for files; here the
same keys are asked of the store. OpenDKIM asks them one query at a time and stops at the
first hit; we ask every key this client can need in one round (`RemoteDataset.prefetch`:
the handler wrapper turns it into one `NeedRows`, performed concurrently through the
store's cache, which coalesces and remembers them, the misses included), then walk the
keys in OpenDKIM's order over the answers. The decision is the same; the table sees more
queries on a cold cache and none on a warm one.

A store that cannot answer: OpenDKIM treats a failed lookup as "not listed" (the function
returns FALSE on any dkimf_db_get error), which would sign an outsider's mail or verify an
insider's. dkimd gives the message the On-InternalError action instead (tempfail by
default), as for the KeyTable: the MTA retries once the store is back.

No per-client memory here (the file HostList keeps one): the rows may change under us;
the store's cache (DataSetCacheTTL, DataSetNegativeCacheTTL) is the memory.
"""

from __future__ import annotations

from dkimd.config.hosts import HostList, candidate_keys, host_keys
from dkimd.stores.dataset import RowsMissing

__all__ = ["RemoteHostList", "host_list_keys"]


def host_list_keys(address: str | None, hostname: str | None) -> list[str]:
    """Every key dkimf_checkhost() then dkimf_checkip() may ask for this client, in order."""
    keys: list[str] = []
    if hostname:
        for key in host_keys(hostname):
            keys += ("!" + key, key)
    if address:
        keys += [key for key, _ in candidate_keys(address)]
    return keys


class RemoteHostList(HostList):
    """A host list whose data set is a remote store: all candidate keys in one round."""

    __slots__ = ()

    def prefetch(self, address: str | None, hostname: str | None) -> None:
        """Raise RowsMissing for every key of this client not in memory yet."""
        self.dataset.prefetch(host_list_keys(address, hostname))

    def matches(self, address: str | None, hostname: str | None) -> bool:
        """Raises RowsMissing (fetch, then run again) or StoreError (On-InternalError)."""
        try:
            # Warm: OpenDKIM's walk over what is in memory, stopping at the first hit.
            return self._decide(address, hostname)
        except RowsMissing:
            # A key is not in memory: ask for every key this client can need, at once.
            self.prefetch(address, hostname)
            return self._decide(address, hostname)  # it came in meanwhile

    def _decide(self, address: str | None, hostname: str | None) -> bool:
        return bool(hostname and self.matches_host(hostname)) or (
            bool(address) and self.matches_address(address or "")
        )

    def _find(self, key: str) -> bool:
        return key in self.dataset

    def __repr__(self) -> str:
        return f"RemoteHostList({self.dataset.describe()!r})"  # never the password
