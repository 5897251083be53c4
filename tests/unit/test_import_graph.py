"""The arrows run one way: the HTTP layer and the worker both stand on a torch-free kernel.

- ``app.*`` never imports ``worker``;
- ``worker`` never imports the HTTP layer or the entry points (``app.api``, ``app.cli``,
  ``app.demo``, ``app.embedded``);
- the kernel (the rest of ``app``) never imports the HTTP layer or the entry points;
- ``models_store`` imports neither ``app`` nor ``worker``;
- nothing under ``app`` imports torch or torchvision, even lazily.

Imports are read from the source (every ``import`` statement, at any depth, ``TYPE_CHECKING``
blocks included), so a lazy import inside a function counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "worker", "models_store")
HTTP_AND_ENTRY = ("app.api", "app.cli", "app.demo", "app.embedded", "app.client", "app.client_cli")
TORCH = ("torch", "torchvision")


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(module: str, source: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import statement in ``source``."""
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            yield node.lineno, base
            for alias in node.names:  # `from app import api` imports app.api
                yield node.lineno, f"{base}.{alias.name}"


def violations(module: str, imported: str) -> list[str]:
    found = []
    if _under(module, ("app",)) and _under(imported, ("worker",)):
        found.append("app must not import worker")
    if _under(module, ("worker",)) and _under(imported, HTTP_AND_ENTRY):
        found.append("worker must not import the HTTP layer or the entry points")
    kernel = _under(module, ("app",)) and not _under(module, HTTP_AND_ENTRY)
    if kernel and _under(imported, HTTP_AND_ENTRY):
        found.append("the kernel must not import the HTTP layer or the entry points")
    if _under(module, ("models_store",)) and _under(imported, ("app", "worker")):
        found.append("models_store must not import app or worker")
    if _under(module, ("app",)) and _under(imported, TORCH):
        found.append("app must not import torch")
    return found


def all_violations(files: Iterable[Path]) -> list[str]:
    report = []
    for path in files:
        module = module_name(path)
        for line, imported in imported_names(module, path.read_text()):
            for rule in violations(module, imported):
                report.append(f"{path.relative_to(REPO)}:{line}: imports {imported}: {rule}")
    return report


def project_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def test_arrows_run_one_way():
    files = project_files()
    assert len(files) > 50
    assert all_violations(files) == []


@pytest.mark.parametrize(
    ("module", "statement"),
    [
        ("app/services/example.py", "from worker.training import nets"),
        ("app/api/routers/example.py", "import worker.celery_app"),
        ("worker/flows/example.py", "from app.api.schemas import ModelOut"),
        ("worker/flows/example.py", "from app import cli"),
        ("app/services/example.py", "def f():\n    import torch\n"),
        ("app/services/example.py", "from app.api import deps"),
        ("models_store/example.py", "from app.settings import Settings"),
    ],
)
def test_a_wrong_way_import_is_caught(tmp_path, module, statement):
    path = REPO / module
    fake = tmp_path / "fake.py"
    fake.write_text(statement)
    found = [
        rule
        for line, imported in imported_names(module_name(path), fake.read_text())
        for rule in violations(module_name(path), imported)
    ]
    assert found, f"{statement!r} in {module} was not caught"


def test_kernel_names_match_the_worker():
    from app.core.architectures import architecture_names as kernel_names
    from app.core.methods import Runner
    from app.core.methods import all_methods as all_specs
    from worker.training.architectures import architecture_names as built
    from worker.unlearning.registry import get_method

    assert kernel_names() == built()
    for spec in all_specs():
        method = get_method(spec.name)  # raises if a model-runner method has no implementation
        assert (method.run is None) == (spec.runner is Runner.SISA)
