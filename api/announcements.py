"""REST routes for announcements (being written)."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
