"""The layout holds: shared/ is the link contract and imports nothing above it, the three
processes import only shared/, and no import cycle exists among the project's modules (imports
inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "transmitter", "receiver", "channel", "experiments", "benchmarks")
# What each top-level package may import of ours (besides itself).
ALLOWED = {
    "shared": set(),
    "transmitter": {"shared"},
    "receiver": {"shared"},
    "channel": {"shared"},
    "experiments": {"shared", "transmitter", "receiver", "channel", "benchmarks"},
    "benchmarks": {"shared", "transmitter", "receiver", "channel", "experiments"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.extend(_resolve(alias.name, None, modules, child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    found.extend(
                        _resolve(child.module, alias.name, modules, child.lineno, in_function)
                    )
            visit(child, nested)

    visit(tree, False)
    return found


def _resolve(module, name, modules, line, in_function):
    if name is not None and f"{module}.{name}" in modules:  # `from pkg import submodule`
        return [(f"{module}.{name}", line, in_function)]
    if module in modules or module.split(".")[0] in PACKAGES:
        return [(module, line, in_function)]
    return []


GRAPH = {name: imports_of(path, project_modules()) for name, path in project_modules().items()}


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_the_layout_allows(package):
    wrong = [
        f"{source}:{line} imports {target}"
        for source, edges in GRAPH.items()
        if source.split(".")[0] == package
        for target, line, _ in edges
        if target.split(".")[0] not in ALLOWED[package] | {package}
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_among_project_modules():
    edges = {
        source: {target for target, _, _ in targets if target in GRAPH and target != source}
        for source, targets in GRAPH.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)
    assert not cycles, "\n".join(cycles)


def test_function_level_imports_of_project_modules_say_why():
    """A project module is imported inside a function only to defer a heavy third-party
    dependency (torch, matplotlib, the web stack), and the line says so in a comment."""
    unexplained = []
    for source, edges in GRAPH.items():
        lines = project_modules()[source].read_text().splitlines()
        for target, line, in_function in edges:
            if not in_function:
                continue
            text = lines[line - 1] + (lines[line - 2] if line > 1 else "")
            if "#" not in text:
                unexplained.append(f"{source}:{line} imports {target} inside a function")
    assert not unexplained, "\n".join(unexplained)


def test_the_graph_sees_the_imports():
    """The checks above are not vacuous: the graph holds the modules and their edges."""
    assert "shared.config" in GRAPH and "experiments.cli" in GRAPH
    assert any(t == "shared.config" for t, _, _ in GRAPH["transmitter.core"])


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"memory": "adaptive"},
        {"latent_grid": "per_dim", "bits_per_value": 4, "delta": True, "delta_bits": "2,3"},
    ],
)
def test_cores_do_no_io(monkeypatch, changes):
    """Weights and cards are read when the configuration is built; the Tx, Rx and channel cores
    then stream a clip without opening a file."""
    import builtins

    from channel.core import ChannelCore
    from experiments.link import InProcessLink, run_stream
    from shared.config import build_config
    from tests.synthetic import drifting_latents

    config = build_config(changes, read_env=False)
    latents = drifting_latents(40, config.latent_dim, seed=1)

    def no_files(*args, **kwargs):
        raise AssertionError(f"a core opened a file: {args[:1]}")

    monkeypatch.setattr(builtins, "open", no_files)
    monkeypatch.setattr(Path, "read_text", no_files)
    monkeypatch.setattr(Path, "read_bytes", no_files)
    link = run_stream(latents, InProcessLink(config, seed=0))
    assert isinstance(link.channel, ChannelCore)
    assert sum(o == "decoded" for o in link.outcomes.values()) == len(latents)
    assert link.agree()
