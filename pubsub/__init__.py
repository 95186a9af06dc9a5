"""Pub/sub: the Broker protocol, its in-process and Redis implementations, Redis ingest.

Imports nothing from the other notifyhub packages.
"""
