"""The package's shape: no import cycles, no reaching into another package's private
names, one registry per concern (optimizers, algorithms, export formats)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "edgeag"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def top_level_imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` imported when ``path`` is imported: module-level statements,
    those in ``try`` blocks included, ``if TYPE_CHECKING`` blocks and function bodies
    not."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend((a.name, []) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.If) and not (
                    isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                visit(node.body)
                visit(node.orelse)
    visit(tree.body)
    return found


def edges() -> dict[str, set[str]]:
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names in top_level_imports(path):
            targets = [module] + [f"{module}.{n}" for n in names]
            for target in targets:  # a module's own packages are initialised before it
                if target in MODULES and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
            # importing a submodule runs its packages' __init__ first
            parts = module.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in MODULES and parent != name and not name.startswith(parent + "."):
                    graph[name].add(parent)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles():
    assert cycles(edges()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_no_package_imports_another_packages_private_names():
    leaks = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("edgeag") and \
                    package_of(node.module) != package_of(name):
                private = [a.name for a in node.names
                           if a.name.startswith("_") and not a.name.startswith("__")]
                private += [p for p in node.module.split(".") if p.startswith("_")]
                if private:
                    leaks.append(f"{name}: from {node.module} import {', '.join(private)}")
    assert leaks == []


def test_the_runners_own_suffix_table_is_the_registrys(tmp_path):
    """``runner.py`` runs copied alone to a device, with a copy of the formats'
    suffix table; it equals the registry's."""
    from edgeag.export.formats import runtime_suffixes

    (tmp_path / "runner.py").write_text((ROOT / "export" / "runner.py").read_text())
    code = "import sys; sys.path.insert(0, '.'); import runner; print(runner.SUFFIXES)"
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code],  # no site-packages: no edgeag
                         cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(runtime_suffixes())


@pytest.mark.parametrize("registry,names", [
    ("edgeag.optim.registry:OPTIMIZERS", ["alphagrad", "adam", "torch-adam", "sgd",
                                         "torch-adafactor", "lion"]),
    ("edgeag.algos:ALGORITHMS", ["ppo", "dqn", "td3", "sac"]),
    ("edgeag.export.formats:FORMATS", ["onnx", "ort", "pte", "c"]),
])
def test_each_registry_is_what_the_cli_offers(registry, names):
    import importlib

    from edgeag.cli import build_parser

    module, _, attr = registry.partition(":")
    assert list(getattr(importlib.import_module(module), attr)) == names
    help_text = build_parser().format_help() + "".join(
        a.format_help() for a in build_parser()._subparsers._group_actions[0].choices.values())
    for name in names:
        assert name in help_text


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize("algo", ["ppo", "dqn", "td3", "sac"])
def test_every_engines_networks_are_the_declared_interface(algo, engine):
    """Each algorithm's networks, on each engine, provide what `Networks` declares; the
    driver, the plan, checkpoints and evaluation use nothing else."""
    import numpy as np

    from edgeag.algos import get_config_class
    from edgeag.algos.base import Networks

    if engine == "torch":
        pytest.importorskip("torch")
    cfg = get_config_class(algo)(engine=engine)
    if algo == "ppo":
        from edgeag.algos.ppo.algorithm import build_policy
        nets = build_policy(cfg, 4, 2, True)
    elif algo == "dqn":
        from edgeag.algos.dqn.algorithm import build_nets
        nets = build_nets(cfg, 4, 2)
    elif algo == "td3":
        from edgeag.algos.td3.algorithm import build_nets
        nets = build_nets(cfg, 3, 1, -np.ones(1), np.ones(1))
    else:
        from edgeag.algos.sac.algorithm import build_nets
        nets = build_nets(cfg, 3, 1, -np.ones(1), np.ones(1))
    assert isinstance(nets, Networks)
    assert {"obs_dim", "action_dim", "discrete", "hidden"} <= set(nets.arch)
    assert nets.memory_items(8)
