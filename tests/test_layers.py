"""Lower layers never import higher ones: read from the package's import statements, not from running it.

{files, runtime} < geo < data < model < eval < train, predictor beside eval and train < app < cli: each layer may
import the layers listed for it and nothing else. Training uses evaluation (cross-validation inside `geosurge train`
scores and fits the posterior with geosurge.eval); evaluation never reaches into the training loop.
"""
import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geosurge"

#: layer -> the layers it may import (besides itself)
ALLOWED = {
    "files": set(),
    "runtime": set(),  # the thread policy every entry point applies
    "geo": {"files", "runtime"},
    "data": {"files", "runtime", "geo"},
    "model": {"files", "runtime", "geo", "data"},
    "train": {"files", "runtime", "geo", "data", "model", "eval"},
    "eval": {"files", "runtime", "geo", "data", "model"},
    "predictor": {"files", "runtime", "geo", "data", "model"},
    "app": {"files", "runtime", "geo", "data", "model", "predictor"},
    "cli": {"files", "runtime", "geo", "data", "model", "train", "eval", "predictor", "app"},
}


def _layer(parts: tuple[str, ...]) -> str | None:
    """The layer of ``geosurge.<parts>`` (a module or a name imported from the package root), or None for
    the root's own ``__init__``/``__main__``, which only re-export."""
    head = parts[0].removesuffix(".py") if parts else None
    return None if head in (None, "__init__", "__main__") else head


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir()


def _imported_layers(path: Path) -> set[str]:
    """Layers of the package that ``path`` imports anywhere (module top or inside a function)."""
    package = ("geosurge", *path.relative_to(PACKAGE).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [tuple(a.name.split(".")) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = base + tuple(node.module.split(".") if node.module else ())
            # `from .. import files` names modules of the root; `from .. import __version__` an attribute of
            # its __init__, which every submodule's import runs anyway
            targets = [module + (a.name,) for a in node.names if _is_module(a.name)] if module == ("geosurge",) else [module]
        else:
            continue
        found.update(_layer(t[1:]) for t in targets if t[:1] == ("geosurge",))
    return found - {None}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if _layer(p.relative_to(PACKAGE).parts) is not None)


def test_every_module_belongs_to_a_known_layer():
    unknown = {str(p.relative_to(PACKAGE)) for p in _modules() if _layer(p.relative_to(PACKAGE).parts) not in ALLOWED}
    assert not unknown, f"add these modules' layer to ALLOWED: {sorted(unknown)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_lower_layers(path):
    layer = _layer(path.relative_to(PACKAGE).parts)
    upward = _imported_layers(path) - ALLOWED.get(layer, set()) - {layer}
    assert not upward, f"{path.relative_to(PACKAGE)} ({layer}) imports higher layers {sorted(upward)}"


def test_eval_never_imports_train():
    for path in (PACKAGE / "eval").rglob("*.py"):
        assert "train" not in _imported_layers(path), path


def test_the_checker_sees_relative_absolute_and_nested_imports(tmp_path, monkeypatch):
    # A checker that parsed nothing would pass every test above: prove it finds each import form.
    pkg = tmp_path / "geosurge"
    (pkg / "model" / "sub").mkdir(parents=True)
    (pkg / "app").mkdir()
    src = ("from ...train.trainer import train\nfrom ..views import ViewSet\nimport geosurge.eval.evaluate\n"
           "from ... import app\ndef f():\n    from ...predictor import Predictor\n")
    (pkg / "model" / "sub" / "m.py").write_text(src)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    assert _imported_layers(pkg / "model" / "sub" / "m.py") == {"train", "model", "eval", "app", "predictor"}


# ------------------------------------------------------------------------------------ import cycles
def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``: never run, so no edge of the import graph."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _module_of(parts: tuple[str, ...], root: Path) -> tuple[str, ...] | None:
    """The module file ``geosurge.<parts>`` names (a package means its ``__init__``), or None outside the package."""
    if parts[:1] != ("geosurge",):
        return None
    rel = parts[1:]
    if (root.joinpath(*rel) / "__init__.py").is_file() if rel else True:
        return (*rel, "__init__")
    if rel and root.joinpath(*rel[:-1], f"{rel[-1]}.py").is_file():
        return rel
    return None


def _imports(path: Path, root: Path) -> set[tuple[str, ...]]:
    """Every module of the package that ``path`` imports when it runs: at module top, inside functions (lazy
    imports are edges too: they hide a cycle, they do not remove it), but not under ``TYPE_CHECKING``."""
    rel = path.relative_to(root).with_suffix("").parts
    package = ("geosurge", *(rel[:-1]))
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_only(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [tuple(a.name.split(".")) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = base + tuple(node.module.split(".") if node.module else ())
            # `from pkg import name`: the submodule when `name` is one, else pkg itself
            names = [module + (a.name,) if _module_of(module + (a.name,), root) and _is_sub(module + (a.name,), root)
                     else module for a in node.names]
        else:
            continue
        found.update(m for m in (_module_of(n, root) for n in names) if m is not None)
    return found - {rel}


def _is_sub(parts: tuple[str, ...], root: Path) -> bool:
    rel = parts[1:]
    return bool(rel) and (root.joinpath(*rel[:-1], f"{rel[-1]}.py").is_file() or (root.joinpath(*rel) / "__init__.py").is_file())


def _cycles(root: Path) -> list[list[str]]:
    """Strongly connected components of more than one module in the package's import graph (Tarjan)."""
    graph = {p.relative_to(root).with_suffix("").parts: _imports(p, root) for p in sorted(root.rglob("*.py"))}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(".".join(w))
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_in_the_package():
    assert _cycles(PACKAGE) == [], "import cycles (lazy imports count; only TYPE_CHECKING imports do not)"


def test_the_cycle_finder_sees_lazy_cycles_and_ignores_type_checking(tmp_path):
    pkg = tmp_path / "geosurge"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "__init__.py").write_text("")
    (pkg / "model" / "config.py").write_text("def f():\n    from .registry import R\n")
    (pkg / "model" / "registry.py").write_text("from geosurge.model.config import f\n")
    (pkg / "model" / "typed.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import other\n")
    (pkg / "model" / "other.py").write_text("from . import typed\n")
    assert _cycles(pkg) == [["model.config", "model.registry"]]


def test_the_command_lines_flags_need_no_torch():
    """``geosurge --help`` and every command's flags build without importing torch, gradio or transformers
    (they took ~3 s when the app's flags imported the model for the embedded checkpoint's path)."""
    import subprocess

    code = ("import sys; from geosurge.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'gradio', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)
