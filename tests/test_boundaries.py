"""The boundary the README states that import contracts can't check: the entry points (the
CLI, the web app, the long-running service) run no query of their own. They ask
``storage.store``, ``storage.listings`` or a stage by name; a primary-key ``session.get`` is
the one lookup they make themselves. (``lint-imports`` checks the layers: see pyproject.toml.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"
ENTRY_POINTS = ("cli", "web", "service")
#: Session methods that run a statement someone wrote.
QUERY_METHODS = frozenset({"exec", "execute", "scalar", "scalars"})
#: Statement builders: importing one means writing a query here.
BUILDERS = frozenset({"select", "update", "delete", "insert", "text", "func"})


def queries_in(source: str) -> list[str]:
    """Each query an entry-point module writes or runs, as ``line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in {
            "sqlalchemy",
            "sqlmodel",
        }:
            found += [f"{node.lineno}: imports {a.name}" for a in node.names if a.name in BUILDERS]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in QUERY_METHODS
        ):
            found.append(f"{node.lineno}: .{node.func.attr}()")
    return found


def test_the_scanner_sees_a_query_written_in_an_entry_point() -> None:
    source = (
        "from sqlmodel import Session, col, select\n"
        "def page(session: Session) -> None:\n"
        "    session.exec(select(User)).all()\n"
        "    session.get(User, 1)\n"
    )
    assert queries_in(source) == ["1: imports select", "3: .exec()"]


@pytest.mark.parametrize("package", ENTRY_POINTS)
def test_entry_points_run_no_query_of_their_own(package: str) -> None:
    modules = sorted((PACKAGE / package).rglob("*.py"))
    assert modules
    written = {
        str(path.relative_to(PACKAGE)): found
        for path in modules
        if (found := queries_in(path.read_text()))
    }
    assert written == {}, "move these into storage.listings, storage.store or the stage"
