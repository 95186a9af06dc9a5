"""Data access: pool, numbered SQL migrations, named queries, repositories.

Imports nothing from the other notifyhub packages; rows travel as plain dicts.
"""
