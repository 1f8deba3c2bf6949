"""The differential harness: the same configuration and message through the real OpenDKIM
2.11 and dkimd over the milter protocol, every reply and header change compared.

* client   -- the MTA side of the milter protocol (independent of dkimd's codec)
* pair     -- FilterPair: both daemons on one configuration, messages sent to both
* compare  -- compare(theirs, ours) -> [Difference(aspect, opendkim, dkimd)]
* expected -- the differences on purpose, read from docs/differences.md
* matrix   -- option settings x awkward messages x modes, and the deterministic sample
"""

from support.differential.client import Envelope, Transcript, milter_exchange
from support.differential.compare import Difference, compare
from support.differential.expected import (
    assert_same_as_opendkim,
    explain,
    explained_by,
    unexplained,
)
from support.differential.pair import FilterPair

__all__ = [
    "Difference",
    "Envelope",
    "FilterPair",
    "Transcript",
    "assert_same_as_opendkim",
    "compare",
    "explain",
    "explained_by",
    "milter_exchange",
    "unexplained",
]
