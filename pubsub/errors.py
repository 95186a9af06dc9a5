"""Errors raised by brokers.

Callers treat these as transient: log, carry on, and rely on the broker's reconnect
(and the hub's gap fill after ``on_reconnect``) to restore delivery.
"""

from __future__ import annotations


class BrokerUnavailable(Exception):
    """The broker cannot reach its server right now; the operation did not happen."""
