"""The import graph of adapterhub/, computed with `ast` from the files: no circles, and no import from a lower layer
to a higher one.

Every `import` and `from ... import` counts, at module level or inside a function (a lazy import is still a
dependency); relative imports are resolved, and `from package import name` points at the submodule when `name` is
one. Imports under `if TYPE_CHECKING:` never run: they count for the layers (an annotation naming a higher layer
is still an upward dependency) but not for circles (they are how a type is named without one).
`adapterhub/__init__.py` is the public facade: it re-exports every layer on first use and is not part of the graph.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "adapterhub"

# Top to bottom. A module may import from its own layer or any layer below it, never from one above.
LAYERS: list[tuple[str, list[str]]] = [
    # the command line, the demo that drives everything, and the schema generator (a tool over the cards)
    ("cli", ["adapterhub.cli", "adapterhub.__main__", "adapterhub.demo", "adapterhub.jsonschema"]),
    # the services built on the operations: deploy (OpenAI server), tune and eval, the vLLM resolver plugin
    ("services", ["adapterhub.deploy", "adapterhub.tuning", "adapterhub.vllm_plugin"]),
    # what users call: load/attach/merge (lora), one-call loading, and the hub (server and client)
    ("operations", ["adapterhub.loading", "adapterhub.lora", "adapterhub.hub"]),
    # where adapters come from (the one resolver, which opens the default registry) and the verdict on a base
    ("sources", ["adapterhub.sources", "adapterhub.compatibility"]),
    # the metadata database, blobs and the Registry
    ("store", ["adapterhub.store"]),
    # files and formats: PEFT's format and its tensors, the self-check, shape rules, safetensors headers, model
    # files, fingerprints, the cards (domain types), path safety, the home folder, progress bars
    (
        "format",
        [
            "adapterhub.peft_format",
            "adapterhub.peft_keys",
            "adapterhub.peft_weights",
            "adapterhub.adapter_check",
            "adapterhub.shapefit",
            "adapterhub.tensorfile",
            "adapterhub.modelfiles",
            "adapterhub.fingerprint",
            "adapterhub.card",
            "adapterhub.fsutil",
            "adapterhub.progress",
            "adapterhub.paths",
            "adapterhub.gguf_base",
        ],
    ),  # fmt: skip
    ("errors", ["adapterhub.errors"]),
]

# Debt allowed to remain, one entry per line as the tests below print it; each must involve adapterhub.hub or
# adapterhub.store and still be real. Empty: the graph has no upward import and no circle.
KNOWN_UPWARD: set[str] = set()
KNOWN_CIRCLES: set[str] = set()


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return _modules()[name].name == "__init__.py"


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    for sub in ast.walk(child):
                        if hasattr(sub, "lineno"):
                            lines.add(sub.lineno)
    return lines


def _target(name: str) -> str | None:
    """The adapterhub module an import names (the longest existing prefix), or None for another package."""
    if not name.startswith("adapterhub"):
        return None
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in _modules():
            return candidate
        parts.pop()
    return None


@cache
def edges() -> dict[tuple[str, str], bool]:
    """(importer, imported) -> True when the import runs (False: only under TYPE_CHECKING)."""
    out: dict[tuple[str, str], bool] = {}
    for mod, path in _modules().items():
        if mod == "adapterhub":
            continue  # the lazy public facade
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        typing_only = _type_checking_lines(tree)
        package = mod if _is_package(mod) else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")
                    base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    source = node.module or ""
                # `from pkg import sub` imports the submodule `pkg.sub` when there is one
                names = [f"{source}.{a.name}" if f"{source}.{a.name}" in _modules() else source for a in node.names]
            for name in names:
                target = _target(name)
                if target is None or target == mod or target == "adapterhub":
                    continue
                runs = node.lineno not in typing_only
                out[(mod, target)] = out.get((mod, target), False) or runs
    return out


def layer_of(mod: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer index): the most specific prefix wins
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (mod == prefix or mod.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    assert best is not None, f"{mod} is in no layer: add it to LAYERS in {__file__}"
    return best[1]


def upward_imports() -> set[str]:
    found = set()
    for (a, b), _runs in edges().items():
        if layer_of(b) < layer_of(a):
            found.add(f"{a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})")
    return found


def circles() -> set[str]:
    """Strongly connected components of the runtime import graph with more than one module (Tarjan)."""
    graph: dict[str, list[str]] = {}
    for (a, b), runs in edges().items():
        if runs:
            graph.setdefault(a, []).append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[str] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(" <-> ".join(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _in_hub_or_store(entry: str) -> bool:
    return "adapterhub.hub" in entry or "adapterhub.store" in entry


def test_every_module_has_a_layer() -> None:
    for mod in _modules():
        if mod != "adapterhub":
            layer_of(mod)


def test_no_import_goes_up_a_layer() -> None:
    assert upward_imports() - KNOWN_UPWARD == set()


def test_no_circles() -> None:
    assert circles() - KNOWN_CIRCLES == set()


def test_known_debt_is_only_in_hub_and_store_and_still_real() -> None:
    assert all(_in_hub_or_store(e) for e in KNOWN_UPWARD | KNOWN_CIRCLES)
    assert KNOWN_UPWARD <= upward_imports(), "fixed: delete these from KNOWN_UPWARD"
    assert KNOWN_CIRCLES <= circles(), "fixed: delete these from KNOWN_CIRCLES"


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    """The checker itself: a function-level relative import is an edge (else every test above passes vacuously)."""
    e = edges()
    assert e[("adapterhub.cli.registry", "adapterhub.sources")]  # `from ..sources import ...` inside a function
    assert ("adapterhub.lora.attach", "adapterhub.lora.state") in e
    assert e[("adapterhub.loading", "adapterhub.compatibility")]
