"""DNS TXT lookups for DKIM key records: the interface, a dnspython resolver, a test file source."""

from dkimd.dns.base import TxtLookup, TxtResult, TxtStatus

__all__ = ["TxtLookup", "TxtResult", "TxtStatus"]
