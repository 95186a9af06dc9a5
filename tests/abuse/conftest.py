"""The hostile-input suite: live hubs and clients come from the live tests' fixtures."""

from tests.live.conftest import hub  # noqa: F401  (the fixture, re-exported)
