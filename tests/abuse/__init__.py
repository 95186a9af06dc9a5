"""The hostile-input suite: what an attacker or a clumsy client sends, and the clear answer.

This package holds the cases that need a hub of their own on real sockets, and the
property-based fuzz of every route in /openapi.json (``test_fuzz.py``: user, admin, API
key and no credentials; no 5xx, answers as documented). The cases of issue 8 that fit a
package's own tests live beside that package's behaviour:

- JSON nested deeper than 32 levels on every validated route and frame:
  ``tests/api/test_errors.py``, ``tests/live/test_ws.py``, ``tests/hub/test_ingest.py``
  (a deep, a poisoned or a reserved-key ingest entry is dead-lettered; the rest of its
  batch is applied; only a database outage is retried);
- header size, header deadline, keep-alive, connection cap, file descriptors:
  ``test_transport.py``;
- a client that stops reading (WebSocket, SSE, unanswered pings): ``test_stalled_reader.py``;
- a database that accepts connections but never answers: ``tests/live/test_faults_db.py``;
- tokens in any encoding kept out of logs, secrets masked in the banner:
  ``test_redaction.py``, ``tests/api/test_cli.py``;
- identity-provider subjects and percent-encoded user ids everywhere: ``test_identity.py``;
- ``exp`` = 10^400 and other forged tokens: ``tests/api/test_auth.py``;
- ``stream:`` idempotency keys, ``user_id`` with ``user_ids``, ``javascript:`` links:
  ``tests/api/test_notifications.py``; unknown preference channels, 30,000 types, PATCH:
  ``tests/api/test_preferences.py``; 415 details and optional bodies:
  ``tests/api/test_errors.py``;
- the ``rate_limited`` frame before a flood's 1008: ``tests/live/test_ws.py``;
- standard EventSource clients resuming after a drop: ``tests/ui/test_native_eventsource.py``;
- everything at once for minutes, with faults: ``make soak`` (``tests/test_soak_smoke.py``
  runs 30 s of it).
"""
