"""The options that tune remote data sets: DataSetCacheTTL, DataSetNegativeCacheTTL and
DataSetTimeout (dkimd extensions, config/options.py), as the cache layer's settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dkimd.stores.cache import CacheSettings

__all__ = ["cache_settings"]


def cache_settings(get: Callable[[str], Any]) -> CacheSettings:
    """The settings from a loader's `get(name) -> Setting | None` (values already parsed)."""
    default = CacheSettings()

    def number(name: str, fallback: float) -> float:
        setting = get(name)
        if setting is None or not isinstance(setting.parsed, int):
            return fallback
        return float(max(0, setting.parsed))

    timeout = number("DataSetTimeout", default.timeout)
    return CacheSettings(
        ttl=number("DataSetCacheTTL", default.ttl),
        negative_ttl=number("DataSetNegativeCacheTTL", default.negative_ttl),
        timeout=timeout if timeout > 0 else default.timeout,
    )
