"""Operational routes (being written)."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
demo_routes: list[BaseRoute] = []
