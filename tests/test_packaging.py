"""What ``pip install .`` gives is enough: every third-party module the package imports is a
runtime dependency in pyproject.toml (or one of its own dependencies), never a dev extra; the
optional ones (Ray, faiss) are imported only inside the function that needs them."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGES = ("shared", "transmitter", "receiver", "channel", "experiments", "benchmarks")
# Distribution name -> the module it installs, where they differ.
MODULE_OF = {"scikit-image": "skimage", "pillow": "PIL", "prometheus-client": "prometheus_client"}
# Modules that come with a runtime dependency (scikit-image brings scipy, fastapi starlette).
TRANSITIVE = {"scipy", "starlette"}
# Optional: imported inside a function, with a message when missing.
OPTIONAL = {"ray": "the `ray` extra", "faiss": "an optional benchmark row"}


def _module(requirement: str) -> str:
    name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower()
    return MODULE_OF.get(name, name.replace("-", "_"))


RUNTIME = {_module(r) for r in PROJECT["dependencies"]} | TRANSITIVE
DEV = {_module(r) for r in PROJECT["optional-dependencies"]["dev"]} - RUNTIME


def third_party_imports() -> list[tuple[str, str, int, bool]]:
    """(module, file, line, inside a function) for every import of a non-project module."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))

            def visit(node: ast.AST, in_function: bool, path: Path = path) -> None:
                for child in ast.iter_child_nodes(node):
                    nested = in_function or isinstance(
                        child, ast.FunctionDef | ast.AsyncFunctionDef
                    )
                    names = []
                    if isinstance(child, ast.Import):
                        names = [a.name for a in child.names]
                    elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                        names = [child.module]
                    for name in names:
                        top = name.split(".")[0]
                        if top not in sys.stdlib_module_names and top not in PACKAGES:
                            rel = str(path.relative_to(ROOT))
                            found.append((top, rel, child.lineno, in_function))
                    visit(child, nested)

            visit(tree, False)
    return found


IMPORTS = third_party_imports()


def test_the_scan_sees_the_imports():
    modules = {m for m, *_ in IMPORTS}
    assert {"torch", "numpy", "fastapi", "websockets"} <= modules


def test_every_import_is_a_runtime_dependency():
    wrong = []
    for module, where, line, in_function in IMPORTS:
        if module in OPTIONAL:
            if not in_function:
                wrong.append(f"{where}:{line}: {module} ({OPTIONAL[module]}) at module level")
        elif module in DEV:
            wrong.append(f"{where}:{line}: {module} is a dev extra, not installed by pip")
        elif module not in RUNTIME:
            wrong.append(f"{where}:{line}: {module} is not a runtime dependency")
    assert not wrong, "\n".join(wrong)
