"""The architecture the folders promise (issue 20): model/ is pure NumPy and never imports the
web stack; no module of app/ imports one that imports it back (through package __init__ files
too); every feature folder is assembled by main.py the one way."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
WEB_STACK = {"fastapi", "starlette", "uvicorn", "jinja2", "httpx", "pydantic", "pydantic_settings"}


def imported_modules(path: Path, package: list[str]) -> set[str]:
    """Absolute names of what `path` imports (at module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}
    return found


def app_import_graph() -> dict[str, set[str]]:
    """rnnscope.app module -> the rnnscope.app modules it makes Python run: those it imports,
    and the __init__ of every package on their way."""
    modules = {}
    for p in APP.rglob("*.py"):
        parts = ["rnnscope", "app", *p.relative_to(APP).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = p
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for imported in imported_modules(path, package):
            parts = imported.split(".")
            for i in range(3, len(parts) + 1):           # rnnscope.app.<package>..., each level
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                    deps.add(prefix)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}                          # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep, path + [dep])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_the_model_package_never_imports_the_web_stack():
    for path in (ROOT / "model").rglob("*.py"):
        imported = {m.split(".")[0] for m in imported_modules(path, ["rnnscope", "model"])}
        web = imported & WEB_STACK
        app = {m for m in imported_modules(path, ["rnnscope", "model"]) if m.startswith("rnnscope.app")}
        assert not web and not app, f"{path.relative_to(ROOT)} imports {sorted(web | app)}"


def test_no_module_of_the_app_imports_one_that_imports_it_back():
    graph = app_import_graph()
    assert len(graph) > 40 and "rnnscope.app.inference.compute_gate" in graph["rnnscope.app.inference.deps"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_feature_folder_is_assembled_by_main():
    from rnnscope.app import main
    from rnnscope.app.feature import Feature

    folders = sorted(p.parent.name for p in APP.glob("*/__init__.py"))
    assert {"web", "inference", "traces", "training"} <= set(folders)
    assembled = {type(f) for f in main.FEATURES}
    assert assembled == {Feature}
    for folder in folders:
        module = __import__(f"rnnscope.app.{folder}", fromlist=["feature"])
        assert isinstance(getattr(module, "feature", None), Feature), f"app/{folder} exposes no `feature`"
        assert module.feature in main.FEATURES, f"main.FEATURES leaves out app/{folder}"
