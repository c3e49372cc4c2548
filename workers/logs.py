"""Log lines that name their destination."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class DestinationLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logger adapter putting ``dest=<slug>`` on every line (and ``destination`` in ``extra``)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        slug = (self.extra or {}).get("destination", "?")
        kwargs.setdefault("extra", {}).update(self.extra or {})
        return f"dest={slug} {msg}", kwargs


def destination_log(logger: logging.Logger, slug: str) -> DestinationLog:
    return DestinationLog(logger, {"destination": slug})
