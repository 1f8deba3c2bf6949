"""Hostile opendkim.conf and data set files: the reader and the model report problems
(each with file:line) and never raise anything but ConfigError; data sets never raise."""

from __future__ import annotations

from fuzz_targets import config_text, dataset, examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dkimd.config.options import all_option_names

FUZZ = settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NAMES = [*all_option_names(), "Include", "Bogus"]
VALUES = st.sampled_from(
    [
        "yes",
        "no",
        "0x",
        "0x1f",
        "-",
        "08",
        "99999999999",
        "csl:",
        "csl:,,,=",
        "file:",
        "refile:",
        "file:/dev/null",
        "refile:/etc/hostname",
        "inet:",
        "inet:x@y",
        "local:",
        "sv",
        "relaxed/",
        "/",
        "reject",
        "bogus",
        "%",
        "*",
        "\0",
        "\x80\xff",
        "a:b:c",
        "=",
        "#",
        "\r",
        "On-Default",
    ]
) | st.text(max_size=30)
LINES = st.one_of(
    st.builds(
        lambda n, sep, v: f"{n}{sep}{v}",
        st.sampled_from(NAMES),
        st.sampled_from([" ", "\t", ""]),
        VALUES,
    ),
    st.text(max_size=40),
)
CONFIG = (
    st.lists(LINES, max_size=15).map("\n".join).map(lambda t: t.encode("utf-8", "surrogateescape"))
)


@FUZZ
@given(CONFIG | st.binary(max_size=400))
@example(b"Include /nonexistent\nMode")
@example(b"Mode sv\rjunk\nMode\tq")
@example(b"UMask 0x\nUMask 09\nUMask -2147483649")
@example(b"KeyTable csl:a=b:c:d,=\nSigningTable refile:/\nDomain \x00")
@example(b"Socket inet:99999@[::1\nSocket local:")
def test_config_text(data: bytes) -> None:
    config_text(data)


DATA_LINES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "*@example.com mail",
                "[[:alpha:]] x",
                "(",
                "*" * 50,
                "a\tb\tc",
                "#c",
                " lead",
                "key",
                "key value",
                "KEY value2",
                "\\",
                "[",
                "**?**",
                "x" * 2000,
            ]
        ),
        st.text(max_size=30),
    ),
    max_size=12,
).map("\n".join)


@FUZZ
@given(
    st.integers(0, 2).flatmap(
        lambda k: DATA_LINES.map(lambda t: bytes([k]) + t.encode("utf-8", "surrogateescape"))
    )
    | st.binary(max_size=300)
)
@example(b"\x02(unclosed\n[z-a]\n*[\n")
@example(b"\x00a=b,=c,,d=,e")
@example(b"\x01dup x\nDUP y\n")
def test_dataset(data: bytes) -> None:
    dataset(data)
