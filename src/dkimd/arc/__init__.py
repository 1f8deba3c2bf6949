"""ARC, the Authenticated Received Chain (RFC 8617): verify a message's chain and add the next
ARC set. Sans-IO, on top of `dkimd.dkim`: the same tag parser, canonicalization, algorithms,
key records and DNS request shape, and a body hash that can be shared with DKIM (`bodies=`).
"""

from dkimd.arc.authres import arc_ar_item
from dkimd.arc.fields import (
    AAR_NAME,
    AMS_NAME,
    AS_NAME,
    MAX_INSTANCES,
    ArcAuthResults,
    ArcFieldError,
    ArcMessageSignature,
    ArcSeal,
    ArcSet,
    ChainState,
    Collected,
    collect_sets,
    parse_aar,
    parse_ams,
    parse_seal,
)
from dkimd.arc.sealer import DEFAULT_AMS_HEADERS, ArcSealer, SealRequest
from dkimd.arc.verifier import (
    ArcError,
    ArcResult,
    ArcVerifier,
    ArcVerifyOptions,
    seal_hash_input,
)

__all__ = [
    "AAR_NAME",
    "AMS_NAME",
    "AS_NAME",
    "DEFAULT_AMS_HEADERS",
    "MAX_INSTANCES",
    "ArcAuthResults",
    "ArcError",
    "ArcFieldError",
    "ArcMessageSignature",
    "ArcResult",
    "ArcSeal",
    "ArcSealer",
    "ArcSet",
    "ArcVerifier",
    "ArcVerifyOptions",
    "ChainState",
    "Collected",
    "SealRequest",
    "arc_ar_item",
    "collect_sets",
    "parse_aar",
    "parse_ams",
    "parse_seal",
    "seal_hash_input",
]
