"""The layout and the one direction of imports (docs/architecture.md), read from the source with `ast`.

The runner's floors, top to bottom; a module imports only from its own floor or the floors below:

- `cli.py`, `__main__.py`: the top floor, imported by nothing (but `__main__.py` imports `cli.py`);
- `serving/` (session, hub, server, access, pacing, cluster/) and `weights/` (download, convert):
  neither imports the other;
- `arguments.py`, `progress.py`: what the commands share;
- `model/`: torch only, it knows nothing of sessions, sockets, the protocol or the command line;
- `demo/`: the demo model's world (scenes, checker, latents); the model reads its grammar for hints.

Across the two packages: `longlive_runner` uses only the client's public modules (`longlive.protocol`,
`longlive.errors`, ...), never an underscore module of `longlive`; the client imports the runner only
in its in-process connector (`longlive/_local.py`).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
RUNNER = SRC / "longlive_runner"

# The runner's parts: the top-level module or folder a file belongs to -> its floor (higher imports lower).
FLOORS = {
    "cli": 4,
    "__main__": 4,
    "serving": 3,
    "weights": 3,
    "arguments": 2,
    "progress": 2,
    "threads": 2,
    "model": 1,
    "demo": 0,
}


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved to absolute names; also the string
    arguments of `importlib.import_module(...)` / `__import__(...)` calls."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    else:
        package = package.removesuffix(".__init__")
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import cli`
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            out.add(node.args[0].value)
    return out


def modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def part_of(path: Path) -> str:
    """The top-level module or folder of the runner a file belongs to ("" for its `__init__.py`)."""
    rel = path.relative_to(RUNNER)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem.replace("__init__", "")


def runner_parts(path: Path) -> set[str]:
    """The parts of the runner a file imports ("" for the package itself)."""
    out = set()
    for m in imported_modules(path):
        names = m.split(".")
        if names[0] == "longlive_runner":
            out.add(names[1] if len(names) > 1 else "")
    return out


def is_under(name: str, *roots: str) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def test_the_import_reader_resolves_relative_imports() -> None:
    names = imported_modules(RUNNER / "serving" / "cluster" / "command.py")
    assert "longlive_runner.arguments" in names  # `from ...arguments import ...`
    assert "longlive_runner.serving.listen" in names  # `from ..listen import ...`
    assert "longlive_runner.model.pipeline" in imported_modules(RUNNER / "serving" / "hub.py")
    assert "longlive_runner.cli" in imported_modules(RUNNER / "__main__.py")
    assert "longlive_runner.serving.cluster.placement" in imported_modules(
        RUNNER / "serving" / "cluster" / "__init__.py"
    )
    assert runner_parts(RUNNER / "cli.py") >= {"arguments", "model", "serving", "weights"}


def test_the_runner_has_the_documented_layout() -> None:
    """Every file of the runner belongs to a part with a floor: a new top-level module or folder
    has to be placed (here and in docs/architecture.md)."""
    parts = {part_of(path) for path in modules("longlive_runner")} - {""}
    assert parts == set(FLOORS)
    for folder in ("model", "serving", "serving/cluster", "weights", "demo"):
        assert (RUNNER / folder / "__init__.py").is_file(), folder
    assert (RUNNER / "serving" / "static" / "index.html").is_file()
    assert (RUNNER / "assets" / "demo" / "config.json").is_file()


def test_imports_point_down_the_floors() -> None:
    offenders = {
        str(path.relative_to(SRC)): sorted(
            p for p in runner_parts(path) if p and p != part_of(path) and FLOORS[p] >= FLOORS[part_of(path)]
        )
        for path in modules("longlive_runner")
        if part_of(path)
    }
    # `__main__.py` runs the CLI: the one import on the top floor
    offenders["longlive_runner/__main__.py"] = [
        p for p in offenders["longlive_runner/__main__.py"] if p != "cli"
    ]
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_library_module_imports_the_cli() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in modules("longlive_runner")
        if path.name not in ("__main__.py", "cli.py")
        and any(
            is_under(m, "longlive_runner.cli", "longlive_runner.__main__") for m in imported_modules(path)
        )
    ]
    assert offenders == []


def test_the_package_exports_only_the_model_side() -> None:
    """`from longlive_runner import load_pipeline, ...`: the public names come from `model/`, lazily."""
    init = RUNNER / "__init__.py"
    assert runner_parts(init) == {"model"}
    import longlive_runner

    exports = longlive_runner._EXPORTS  # type: ignore[attr-defined]
    assert set(exports) == set(longlive_runner.__all__)
    for name, module in exports.items():
        assert module.startswith("model."), name
        assert getattr(importlib.import_module(f"longlive_runner.{module}"), name) is getattr(
            longlive_runner, name
        )


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
        str(path.relative_to(SRC))
        for path in modules("longlive")
        if any(is_under(m, "longlive_runner") for m in imported_modules(path))
    )
    assert users == ["longlive/_local.py"]


# What the model side never imports: the serving side's libraries, the client, the command line.
# Of the client, only `longlive.units` (frame and schedule arithmetic on ints, standard library
# only): the one statement of the prompt-in-force rule and of latent -> video frames.
MODEL_MAY_USE = ("longlive.units",)
NOT_IN_THE_MODEL = (
    "longlive",
    "websockets",
    "asyncio",
    "socket",
    "http",
    "httpx",
    "fastapi",
    "starlette",
    "ray",
    "argparse",
    "tqdm",
)


def test_the_model_code_knows_nothing_of_serving() -> None:
    offenders = {
        str(path.relative_to(SRC)): sorted(
            m
            for m in imported_modules(path)
            if (m.split(".")[0] in NOT_IN_THE_MODEL and not is_under(m, *MODEL_MAY_USE))
            or (
                is_under(m, "longlive_runner")
                and not is_under(m, "longlive_runner.model", "longlive_runner.demo")
            )
        )
        for package in ("longlive_runner/model", "longlive_runner/demo")
        for path in modules(package)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def private_imports(path: Path) -> list[str]:
    """The underscore names (not dunders) `path` imports from another module of the two packages:
    `from .hub import _consume` would share what the module keeps for itself."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module or ""
        if not node.level and module.split(".")[0] not in ("longlive", "longlive_runner"):
            continue  # another library's names are its business
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                out.append(f"{'.' * node.level}{module}.{alias.name}")
    return out


def test_no_private_name_is_imported_across_modules() -> None:
    offenders = {
        str(path.relative_to(SRC)): private_imports(path)
        for package in ("longlive_runner", "longlive")
        for path in modules(package)
    }
    assert {k: v for k, v in offenders.items() if v} == {}
