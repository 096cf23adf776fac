"""The layering of DESIGN.md, read from the imports of every module in llmkit/ (ast; nothing is imported):

1. foundations  — files, formats, tokenizer, model sizes, the closed world, the run folder, the options and
                   recipes, the registry of stages
2. machinery    — trainer plumbing, generation, reward-model inference, evaluation and the measurements, the
                   stage lifecycle, curves, the report, ...
3. stages       — one module each; a stage imports no other stage
4. drivers      — the pipeline, the launcher, the CLI, the loss lab

A module imports only from its own layer or below; no import circles; no module takes another's `_private`
name; llmkit imports widgets/ only where the CLI serves an app. A new module must be given a layer here — but a
stage's options (`llmkit.options.<stage>`, layer 1) and an RL stage (`llmkit.rl.<stage>`, layer 3) have theirs by
where they live. Imports sit at the top of a module: a few inside functions, each with its reason beside it.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llmkit"

LAYERS = {
    "llmkit": 1, "llmkit.errors": 1, "llmkit.options": 1, "llmkit.recipes": 1, "llmkit.registry": 1,
    "llmkit.runs": 1, "llmkit.loaders": 1, "llmkit.formats": 1,
    "llmkit.tokenizer": 1, "llmkit.model": 1, "llmkit.world": 1, "llmkit.oracle": 1, "llmkit.chat_format": 1,
    "llmkit.families": 1, "llmkit.verifier": 1, "llmkit.export": 2,
    "llmkit.training": 2, "llmkit.generation": 2, "llmkit.reward_model": 2, "llmkit.evaluate": 2,
    "llmkit.measures": 2, "llmkit.lifecycle": 2,
    "llmkit.curves": 2, "llmkit.report": 2, "llmkit.labels": 2, "llmkit.muon": 2, "llmkit.cleaning": 2,
    "llmkit.rl.inputs": 2, "llmkit.rl.health": 2, "llmkit.rl.trl_stage": 2,
    "llmkit.data": 3, "llmkit.data_at_scale": 3, "llmkit.pretrain": 3, "llmkit.sft": 3, "llmkit.reward": 3,
    "llmkit.rl": 3,
    "llmkit.pipeline": 4, "llmkit.loss_lab": 4, "llmkit.launch": 4, "llmkit.cli": 4, "llmkit.__main__": 4,
}
# a stage's options, and the RL stages, have their layer by where they live
BY_PLACE = (("llmkit.options.", 1), ("llmkit.rl.", 3))
# Imports inside functions: at most this many in llmkit, each with its reason on its line or the line above (an
# optional dependency, the CLI's torch-free path)
MAX_LOCAL_IMPORTS = 40
# Modules that belong to a stage without being one: the data stage on datatrove's executors.
PART_OF = {"llmkit.data_at_scale": "llmkit.data"}
WIDGETS_ALLOWED = {"llmkit.cli"}  # `llmkit chat` and `llmkit label` serve the apps (imported lazily)


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


MODULES = _modules()
for _name in MODULES:
    if _name not in LAYERS:
        LAYERS[_name] = next((layer for prefix, layer in BY_PLACE if _name.startswith(prefix)), None)
LAYERS = {k: v for k, v in LAYERS.items() if v is not None}


def _imports(name: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every import in the module, inside functions too."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}:{node.lineno}: use absolute imports"
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.append((full, "", node.lineno) if full in MODULES else (node.module, a.name, node.lineno))
    return out


def _llmkit_edges(name: str) -> set[str]:
    return {target for target, _, _ in _imports(name) if target in MODULES and target != name}


def test_every_module_has_a_layer():
    assert sorted(set(MODULES) - set(LAYERS)) == [], "give the new module a layer in tests/test_layering.py"
    assert sorted(set(LAYERS) - set(MODULES)) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down_the_layers_and_stages_stay_apart(name):
    for target in _llmkit_edges(name):
        assert LAYERS[target] <= LAYERS[name], f"{name} (layer {LAYERS[name]}) imports {target} (layer {LAYERS[target]})"
        if LAYERS[name] == LAYERS[target] == 3 and target != "llmkit.rl":
            assert PART_OF.get(name) == target, f"stage {name} imports stage {target}: move what both need down a layer"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_from_other_modules(name):
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    aliases = {}  # local name -> llmkit module it stands for
    for target, imported, line in _imports(name):
        assert not imported.startswith("_") or not target.startswith("llmkit"), \
            f"{name}:{line} imports {target}.{imported}, a private name"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if f"{node.module}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES:
                    aliases[a.asname or a.name] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != name):
            pytest.fail(f"{name}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}, a private name")


def test_no_import_circles():
    edges = {name: _llmkit_edges(name) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges[name]):
            if state.get(target) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])


def _local_imports(name: str) -> list[tuple[int, str]]:
    """(line, the import's source line) of every import inside a function of the module."""
    text = MODULES[name].read_text(encoding="utf-8")
    lines = text.split("\n")
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out |= {(n.lineno, lines[n.lineno - 1]) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
    return sorted(out)


def test_imports_sit_at_the_top_and_the_few_inside_functions_say_why():
    """Each stage's config and presets live in a light module (llmkit/options/), so the heavy modules import torch
    and llmkit at the top; an import inside a function is for the CLI's torch-free path or an optional dependency,
    and says so, and never repeats one the module has at its top."""
    total = 0
    for name, path in sorted(MODULES.items()):
        lines = path.read_text(encoding="utf-8").split("\n")
        top = {ast.unparse(n) for n in ast.parse("\n".join(lines)).body if isinstance(n, ast.Import | ast.ImportFrom)}
        local = _local_imports(name)
        for line, source in local:
            total += 1
            block = [line]  # the imports right above it, in one block, share a reason
            while (block[-1] - 1, lines[block[-1] - 2]) in local:
                block.append(block[-1] - 1)
            below = line
            while (below + 1, lines[below]) in local:
                below += 1
            said = any("#" in lines[i - 1] for i in range(block[-1] - 1, below + 1))
            assert said, f"{name}:{line}: an import inside a function needs its reason beside it: {source.strip()}"
            assert ast.unparse(ast.parse(source.strip()).body[0]) not in top, f"{name}:{line} repeats a top import"
    assert total < MAX_LOCAL_IMPORTS, f"{total} imports inside functions in llmkit (at most {MAX_LOCAL_IMPORTS - 1})"


def test_llmkit_imports_widgets_only_to_serve_the_apps():
    for name in MODULES:
        users = [line for target, _, line in _imports(name) if target.split(".")[0] == "widgets"]
        assert not users or name in WIDGETS_ALLOWED, f"{name}:{users[0]} imports widgets/"


def test_the_checks_catch_what_they_forbid(tmp_path, monkeypatch):
    """The rules above fail on a stage that imports another stage's private helper, and on a foundation that
    imports the pipeline (a circle, too)."""
    bad = tmp_path
    (bad / "reward.py").write_text("from llmkit.sft import _has_flash_attention\n", encoding="utf-8")
    monkeypatch.setitem(MODULES, "llmkit.reward", bad / "reward.py")
    with pytest.raises(AssertionError, match="stage llmkit.reward imports stage llmkit.sft"):
        test_imports_go_down_the_layers_and_stages_stay_apart("llmkit.reward")
    with pytest.raises(AssertionError, match="private name"):
        test_no_private_names_from_other_modules("llmkit.reward")
    (bad / "runs.py").write_text("from llmkit import pipeline\n", encoding="utf-8")
    monkeypatch.setitem(MODULES, "llmkit.runs", bad / "runs.py")
    with pytest.raises(AssertionError, match="layer 1.*imports llmkit.pipeline"):
        test_imports_go_down_the_layers_and_stages_stay_apart("llmkit.runs")
    with pytest.raises(pytest.fail.Exception, match="import circle"):
        test_no_import_circles()
