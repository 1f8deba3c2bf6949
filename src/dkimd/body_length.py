"""`BodyLengthDB`: sign with `l=` when a recipient is listed (opendkim.c dkimf_checkbldb).

OpenDKIM asks the data set, for each envelope recipient in turn (the MTA's RCPT TO, angle
brackets stripped), these keys in order until one is there:

* `user@domain`, then `*@domain`;
* for each suffix of the domain that starts at a dot, the dot kept (`a.example.com` gives
  `.example.com`, then `.com`): `user@.suffix`, then `*@.suffix`;
* finally `user@*` and `*`.

A recipient that does not parse as `user@domain` is skipped. The first hit asks for `l=`
on every signature of the message (libopendkim dkim_setpartial): a list's footer added
after signing then leaves the signature valid, at the price RFC 6376 8.2 describes.

Pure: the data set is already open (dkimd.config.datasets).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from dkimd.config import Dataset

__all__ = ["BodyLengthDb", "lookup_keys"]


def lookup_keys(user: str, domain: str) -> Iterator[str]:
    """The keys dkimf_checkbldb tries for one recipient, in order."""
    yield f"{user}@{domain}"
    yield f"*@{domain}"
    dot = domain.find(".")
    while dot != -1:
        suffix = domain[dot:]
        yield f"{user}@{suffix}"
        yield f"*@{suffix}"
        dot = domain.find(".", dot + 1)
    yield f"{user}@*"
    yield "*"


class BodyLengthDb:
    """The BodyLengthDB data set with OpenDKIM's lookup order."""

    __slots__ = ("dataset",)

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def match(self, addresses: Sequence[str]) -> str | None:
        """The entry the first matching recipient hits (for the log), or None.

        `addresses` are the recipients already parsed as `user@domain` (the caller skips
        the ones that do not parse, as OpenDKIM does).
        """
        for address in addresses:
            user, _, domain = address.rpartition("@")
            for key in lookup_keys(user, domain):
                if key in self.dataset:
                    return key
        return None
