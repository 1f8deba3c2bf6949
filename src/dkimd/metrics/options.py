"""MetricsSocket and MetricsDomains, read into `Config` (called by `config.load`).

* ``MetricsSocket`` (``inet:PORT@ADDR`` or ``PORT@ADDR``, as Socket; off when unset): where
  Prometheus scrapes ``/metrics``. Needs the ``dkimd[metrics]`` extra (prometheus_client);
  without it the configuration is refused (exit 78), ``dkimd check`` included.
* ``MetricsDomains`` (a comma- or space-separated list of domains): the verifying
  domains that get a label of their own in ``dkimd_verify_signatures_total``; every other
  domain counts as "other", so random domains in hostile mail cannot grow the series.
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING

from dkimd.metrics import EXTRA_HINT
from dkimd.sockets import parse_socket_spec

if TYPE_CHECKING:
    from dkimd.config.load import _Builder

__all__ = ["read_metrics_options"]

_SEPARATORS = re.compile(r"[\s,]+")
_BARE_INET = re.compile(r"\d+@\S+")  # PORT@ADDR: to Socket a path, here TCP is meant


def read_metrics_options(builder: _Builder) -> None:
    setting = builder.get("MetricsSocket")
    if setting is not None:
        text = setting.value.strip()
        if _BARE_INET.fullmatch(text):
            text = f"inet:{text}"
        try:
            spec = parse_socket_spec(text)
        except ValueError as exc:
            builder.error(setting, f"MetricsSocket: {exc}", "e.g. inet:9318@127.0.0.1")
        else:
            if spec.family == "local":
                builder.error(
                    setting,
                    f"MetricsSocket: {setting.value}: Prometheus scrapes over TCP",
                    "e.g. inet:9318@127.0.0.1",
                )
            elif importlib.util.find_spec("prometheus_client") is None:
                builder.error(
                    setting, "MetricsSocket needs prometheus_client, not installed", EXTRA_HINT
                )
            else:
                builder.values["metrics_socket"] = spec
    setting = builder.get("MetricsDomains")
    if setting is not None:
        names = (d.lower().rstrip(".") for d in _SEPARATORS.split(setting.value))
        builder.values["metrics_domains"] = tuple(sorted({d for d in names if d}))
