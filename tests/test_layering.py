"""Imports point one way: pubsub and db know no other notifyhub package; nothing imports api."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["hub", "api", "pubsub", "db"]
ALLOWED = {
    "pubsub": set(),
    "db": set(),
    "hub": {"db", "pubsub"},
    "api": {"hub", "db", "pubsub"},
}


def imported_packages(path: Path) -> set[str]:
    return imported_modules(path) & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_the_layers_below_it(package):
    for path in (ROOT / package).rglob("*.py"):
        wrong = imported_packages(path) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


#: Each driver is imported by the one package that translates its errors (db.errors,
#: pubsub.errors): nothing above them sees a driver or its exceptions.
DRIVERS = {"asyncpg": "db", "redis": "pubsub"}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_only_the_package_that_translates_a_drivers_errors_imports_it(package):
    for path in (ROOT / package).rglob("*.py"):
        wrong = {d for d, owner in DRIVERS.items() if owner != package} & imported_modules(path)
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"
