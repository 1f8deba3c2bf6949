"""ATPS (RFC 6541), the signer's tags and the query label."""

from __future__ import annotations

import pytest

from dkimd.dkim.atps import atps_label, atps_tags


def test_tags_in_opendkim_s_order() -> None:
    assert atps_tags("Example.NET") == (("atpsh", "sha256"), ("atps", "example.net"))
    assert atps_tags("example.net", "none") == (("atpsh", "none"), ("atps", "example.net"))
    with pytest.raises(ValueError, match="unknown ATPS hash"):
        atps_tags("example.net", "md5")


def test_label_is_upper_case_base32_with_padding() -> None:
    # The name OpenDKIM's own tests publish (tests/pubkeys) for d=example.com.
    assert atps_label("example.com") == "UN42N5XOV642KXRXRQIYANHCOUPGQL5LT4WTBKYT2IJFLBWODFDQ===="
    assert atps_label("Example.COM.") == atps_label("example.com")
    assert len(atps_label("example.com", "sha1")) == 32
    assert atps_label("example.com", "none") == "example.com"
