"""The alerts service (``python -m workers alerts``): rules, episodes, channels, scheduled reports.

See docs/alerts.md. Rule evaluation is pure (:mod:`core.alerts`); this package loads the tables,
stores episodes and delivers them through the channel adapters.
"""

from __future__ import annotations

from workers.alerts.service import AlertOptions, AlertService, run_alerts

__all__ = ["AlertOptions", "AlertService", "run_alerts"]
