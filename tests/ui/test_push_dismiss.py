"""Cross-device dismissal in Chromium (docs/delivery.md, "Cross-device dismissal"): a
dismiss push closes the notification the service worker showed for it, and nothing else.
Pushes are dispatched inside the real worker as tests/ui/test_push.py does."""

from __future__ import annotations

import orjson
import pytest

from tests.ui.test_push import (  # noqa: F401 - fixtures
    DISPATCH,
    SHOWN,
    push_json,
    registered_worker,
    settings_env,
    worker_context,
)

pytestmark = pytest.mark.browser


def dismiss(id_: int) -> dict[str, str]:
    return {"data": orjson.dumps({"type": "dismiss", "id": id_}).decode()}


async def test_a_dismiss_push_closes_the_shown_notification_with_its_tag_and_leaves_others(
    worker_context, hub  # noqa: F811
):
    worker = await registered_worker(worker_context, hub)
    await worker.evaluate(DISPATCH, ["push", push_json(id=42)])
    await worker.evaluate(DISPATCH, ["push", push_json(id=43, title="Other")])
    assert sorted(n["tag"] for n in await worker.evaluate(SHOWN)) == ["n42", "n43"]

    await worker.evaluate(DISPATCH, ["push", dismiss(42)])
    shown = await worker.evaluate(SHOWN)
    assert [(n["tag"], n["title"]) for n in shown] == [("n43", "Other")]
    # Dismissing what is not shown (any more) shows nothing either.
    await worker.evaluate(DISPATCH, ["push", dismiss(42)])
    await worker.evaluate(DISPATCH, ["push", dismiss(7)])
    assert [n["tag"] for n in await worker.evaluate(SHOWN)] == ["n43"]


async def test_a_notification_whose_type_is_named_dismiss_is_still_shown(
    worker_context, hub  # noqa: F811
):
    worker = await registered_worker(worker_context, hub)
    await worker.evaluate(DISPATCH, ["push", push_json(id=44, type="dismiss")])
    assert [n["tag"] for n in await worker.evaluate(SHOWN)] == ["n44"]
