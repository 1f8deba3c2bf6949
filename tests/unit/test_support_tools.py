"""tests/support/tools.py: a missing test dependency skips here and fails under CI."""

from __future__ import annotations

import pytest

from support.tools import require_module


def test_require_module_returns_the_module() -> None:
    assert require_module("json").dumps([1]) == "[1]"


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_a_missing_module_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="dkimd_no_such_module"):
        require_module("dkimd_no_such_module")
