"""Load generator and scenarios for notifyhub (``make bench``; results in docs/benchmarks.md)."""
