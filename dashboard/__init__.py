"""Cold Harbour's read-only web dashboard (Plotly Dash). See ``docs/web_architecture.md``.

``dashboard.app:create_app`` builds the app, ``dashboard.app:server`` is the WSGI object and
``python -m dashboard`` serves it on ``PORT``.
"""
