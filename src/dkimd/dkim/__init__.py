"""The DKIM engine (RFC 6376, RFC 8301, RFC 8463): pure, no asyncio, no I/O besides reading a key
file. See docs/ARCHITECTURE.md for how the milter side drives it.
"""

from dkimd.dkim.algorithms import ALGORITHMS, SignatureAlgorithm, get_algorithm
from dkimd.dkim.canonicalization import (
    BodyCanonicalizer,
    BodyHashSet,
    canonicalize_body,
    canonicalize_header,
)
from dkimd.dkim.errors import (
    DkimError,
    KeyLoadError,
    KeyRecordError,
    MessageError,
    ParseError,
    SignatureError,
    SigningError,
    TagListError,
)
from dkimd.dkim.headers import (
    HeaderField,
    LineEndingNormalizer,
    MessageSplitter,
    field_key,
    name_key,
    parse_header_block,
    split_message,
)
from dkimd.dkim.keys import (
    KeyRecord,
    PrivateKey,
    load_private_key,
    load_private_key_file,
    parse_key_record,
)
from dkimd.dkim.results import (
    AR_FIELD_NAME,
    DkimResult,
    SignatureResult,
    VerifyError,
    ar_result,
    authentication_results_value,
    bad_format_value,
    format_result,
)
from dkimd.dkim.signature import (
    DkimSignature,
    SignatureField,
    build_signature_field,
    fold_b_value,
    fold_signature,
    header_hash_input,
    parse_signature,
    select_headers,
    signature_fields,
    strip_b_value,
    unsigned_header_hash_input,
)
from dkimd.dkim.signer import DEFAULT_SIGNED_HEADERS, Signer, SigningRequest
from dkimd.dkim.tags import parse_tag_list
from dkimd.dkim.verifier import Verifier, VerifyOptions

__all__ = [
    "ALGORITHMS",
    "AR_FIELD_NAME",
    "DEFAULT_SIGNED_HEADERS",
    "BodyCanonicalizer",
    "BodyHashSet",
    "DkimError",
    "DkimResult",
    "DkimSignature",
    "HeaderField",
    "KeyLoadError",
    "KeyRecord",
    "KeyRecordError",
    "LineEndingNormalizer",
    "MessageError",
    "MessageSplitter",
    "ParseError",
    "PrivateKey",
    "SignatureAlgorithm",
    "SignatureError",
    "SignatureField",
    "SignatureResult",
    "Signer",
    "SigningError",
    "SigningRequest",
    "TagListError",
    "Verifier",
    "VerifyError",
    "VerifyOptions",
    "ar_result",
    "authentication_results_value",
    "bad_format_value",
    "build_signature_field",
    "canonicalize_body",
    "canonicalize_header",
    "field_key",
    "fold_b_value",
    "fold_signature",
    "format_result",
    "get_algorithm",
    "header_hash_input",
    "load_private_key",
    "load_private_key_file",
    "name_key",
    "parse_header_block",
    "parse_key_record",
    "parse_signature",
    "parse_tag_list",
    "select_headers",
    "signature_fields",
    "split_message",
    "strip_b_value",
    "unsigned_header_hash_input",
]
