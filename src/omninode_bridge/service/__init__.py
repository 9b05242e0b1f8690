"""The HTTP lock service (SPEC §4): ASGI app, routes, auth, metrics and dashboard.

``from omninode_bridge.service.app import create_app``. Needs the ``service`` extra
(fastapi, uvicorn, prometheus-client); this package itself imports none of them, so
the ``omninode-lock`` CLI works without it.
"""
