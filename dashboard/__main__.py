"""``python -m dashboard``: serve the app on ``PORT`` (default 5000) with Flask's threaded server.

For production use gunicorn: ``gunicorn -k gthread --threads 32 -b 0.0.0.0:5000 dashboard.app:server``.
"""

from __future__ import annotations

import argparse
import logging

from core.errors import ConfigError
from core.settings import load_settings
from dashboard.app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboard", description="Cold Harbour dashboard")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: PORT setting, 5000)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:  # a configuration error is a message, not a traceback
        raise SystemExit(f"error: {exc}") from None
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    # WEB_RELOAD restarts the server on code changes; it never turns on Flask's debug mode, whose
    # interactive debugger (/console) would run any Python a visitor sends
    app.run(host=args.host, port=args.port or settings.port, debug=False, use_debugger=False,
            use_reloader=settings.web_reload, threaded=True)


if __name__ == "__main__":
    main()
