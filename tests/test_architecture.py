"""The direction of imports (docs/architecture.md), read from the source with `ast`:

- nothing in `longlive_runner` imports its CLI (`cli.py` is the top floor) but `__main__.py`;
- `longlive_runner` uses only the client's public modules (`longlive.protocol`, `longlive.errors`,
  ...), never an underscore module of `longlive`;
- the client imports the runner only in its in-process connector (`longlive/_local.py`);
- `longlive_runner/models/` knows nothing of sessions, sockets or the protocol.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved to absolute names."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import cli`
    return out


def modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def test_the_import_reader_resolves_relative_imports() -> None:
    names = imported_modules(SRC / "longlive_runner" / "cluster" / "command.py")
    assert "longlive_runner.arguments" in names  # `from ..arguments import ...`
    assert any(n.startswith("longlive_runner.") for n in imported_modules(SRC / "longlive_runner" / "cli.py"))


def test_no_library_module_imports_the_cli() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in modules("longlive_runner")
        if path.name != "__main__.py"
        and path.name != "cli.py"
        and any(
            m == "longlive_runner.cli" or m.startswith("longlive_runner.cli.") for m in imported_modules(path)
        )
    ]
    assert offenders == []


def test_the_runner_uses_only_the_clients_public_modules() -> None:
    offenders = {
        str(path.relative_to(SRC)): sorted(
            m for m in imported_modules(path) if m.startswith("longlive.") and m.split(".")[1].startswith("_")
        )
        for path in modules("longlive_runner")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_client_names_the_runner_only_in_its_in_process_connector() -> None:
    users = sorted(
        path.name
        for path in modules("longlive")
        if any(m == "longlive_runner" or m.startswith("longlive_runner.") for m in imported_modules(path))
    )
    assert users == ["_local.py"]


def test_the_model_code_knows_nothing_of_serving() -> None:
    serving = (
        "longlive",
        "websockets",
        "asyncio",
        "socket",
        "longlive_runner.session",
        "longlive_runner.hub",
    )
    offenders = {
        path.name: sorted(m for m in imported_modules(path) if m.split(".")[0] in serving or m in serving)
        for path in modules("longlive_runner/models")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
