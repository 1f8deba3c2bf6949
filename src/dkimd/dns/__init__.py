"""DNS TXT lookups for DKIM key records: the interface, a dnspython resolver, a test file source."""

from dkimd.dns.base import CachingTxtLookup, TxtLookup, TxtResult, TxtStatus

__all__ = ["CachingTxtLookup", "TxtLookup", "TxtResult", "TxtStatus"]
