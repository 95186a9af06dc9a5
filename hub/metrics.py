"""Prometheus metrics of one hub instance, on a registry of its own (not the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric notifyhub exports at ``/metrics``; one instance per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "notifyhub_http_requests_total", "HTTP requests answered",
            ["method", "route", "status"], registry=r,
        )
        self.http_latency = Histogram(
            "notifyhub_http_request_seconds", "HTTP request latency",
            ["method", "route"], registry=r,
        )
        self.notifications_created = Counter(
            "notifyhub_notifications_created_total", "Notifications stored", registry=r
        )
        self.notifications_suppressed = Counter(
            "notifyhub_notifications_suppressed_total",
            "Notifications not stored because of preferences", registry=r,
        )
        self.write_batches = Counter(
            "notifyhub_write_batches_total",
            "Batches committed by the group-commit writer (each in one transaction, or "
            "in one statement)", registry=r,
        )
        self.write_batch_jobs = Counter(
            "notifyhub_write_batch_jobs_total",
            "Creates committed by the group-commit writer (divided by batches: the mean "
            "batch size)", registry=r,
        )
        self.messages_sent = Counter(
            "notifyhub_messages_sent_total", "Direct messages stored", registry=r
        )
        self.connections = Gauge(
            "notifyhub_connections", "Open live connections", ["transport"], registry=r
        )
        self.events_delivered = Counter(
            "notifyhub_events_delivered_total", "Events queued to live connections", registry=r
        )
        self.slow_disconnects = Counter(
            "notifyhub_slow_client_disconnects_total",
            "Connections closed because they fell behind", registry=r,
        )
        self.gap_fills = Counter(
            "notifyhub_gap_fills_total", "Gaps in live events filled from the database",
            registry=r,
        )
        self.broker_publish_errors = Counter(
            "notifyhub_broker_publish_errors_total", "Failed broker publishes", registry=r
        )
        self.broker_healthy = Gauge(
            "notifyhub_broker_healthy", "1 while the broker is connected", registry=r
        )
        self.ingest_applied = Counter(
            "notifyhub_ingest_applied_total", "Ingest entries applied", ["source"], registry=r
        )
        self.ingest_retried = Counter(
            "notifyhub_ingest_retried_total",
            "Stream entries whose batch failed on the database and is applied again",
            registry=r,
        )
        self.deliveries = Counter(
            "notifyhub_deliveries_total",
            "Delivery attempts by outcome (sent, retried, failed)", ["channel", "outcome"],
            registry=r,
        )
        self.delivery_queue = Gauge(
            "notifyhub_delivery_queue",
            "Deliveries waiting to be sent (scheduled), as the worker loop last counted",
            ["channel"], registry=r,
        )
        self.ingest_dead = Counter(
            "notifyhub_ingest_dead_lettered_total", "Invalid ingest entries dead-lettered",
            registry=r,
        )
