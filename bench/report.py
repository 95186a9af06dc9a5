"""Result rows: latency statistics, the ``BENCH {json}`` lines and the Markdown table.

Every row has the keys of ``KEYS`` (``None`` where a measure does not apply), plus
scenario-specific extras that the table shows in its last column.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import orjson

KEYS = (
    "scenario", "target", "connections", "offered_per_s", "published", "delivered",
    "published_per_s", "delivered_per_s", "delivered_ratio", "p50_ms", "p99_ms", "max_ms",
    "server_cpu_us_per_frame", "stack_cpu_us_per_frame", "rss_per_conn_kib",
)

COLUMNS = (
    ("scenario", "scenario"), ("target", "target"), ("offered_per_s", "offered/s"),
    ("published_per_s", "published/s"), ("delivered_per_s", "delivered/s"),
    ("delivered_ratio", "delivered/published"),
    ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms"),
    ("server_cpu_us_per_frame", "server CPU µs/frame"),
    ("stack_cpu_us_per_frame", "server+Redis+PG CPU µs/frame"),
    ("rss_per_conn_kib", "RSS KiB/conn"),
)


def pct(values: list[float], p: float) -> float | None:
    """The ``p`` quantile (0..1) of ``values`` by nearest rank, or ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def latency(values_ms: list[float]) -> dict[str, float | None]:
    """p50, p99 and max of latencies in milliseconds, rounded to 0.1 ms."""
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 1)

    return {"p50_ms": r(pct(values_ms, 0.5)), "p99_ms": r(pct(values_ms, 0.99)),
            "max_ms": r(max(values_ms, default=None))}


def cpu_per_frame(seconds: float, frames: int) -> float | None:
    """CPU microseconds per delivered frame, or ``None`` without frames."""
    return round(seconds * 1e6 / frames, 1) if frames else None


def row(scenario: str, target: str, **values: Any) -> dict[str, Any]:
    """A result row with every key of ``KEYS`` present (missing ones ``None``)."""
    result: dict[str, Any] = dict.fromkeys(KEYS)
    result.update(scenario=scenario, target=target, **values)
    return result


def emit(result: dict[str, Any]) -> None:
    """Prints the row as one ``BENCH {json}`` line."""
    print("BENCH " + orjson.dumps(result).decode(), flush=True)


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 1 and value != 0 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """One Markdown table of all rows; extras go into a final ``notes`` column."""
    head = [label for _, label in COLUMNS] + ["notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [cell(r.get(key)) for key, _ in COLUMNS]
        extras = {k: v for k, v in r.items() if k not in KEYS and v is not None}
        cells.append(", ".join(f"{k}={cell(v)}" for k, v in extras.items()) or "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    """One line describing the machine and the Python the run used."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "")
    except OSError:
        pass
    return (f"{platform.machine()}, {os.cpu_count()} cores ({model or 'unknown CPU'}), "
            f"Linux {platform.release()}, Python {platform.python_version()}")


def print_line(value: Any) -> None:
    """Writes ``value`` as one JSON line to stdout with ``os.write`` until all is out.

    (After a uvloop loop ran, ``print`` of more than a pipe buffer to a pipe the reader
    drains late loses the rest silently; the loaders' latency lists are that big.)
    """
    data = orjson.dumps(value) + b"\n"
    os.set_blocking(1, True)
    while data:
        data = data[os.write(1, data):]
