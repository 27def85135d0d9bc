"""Imports run one way: base -> data -> text -> models -> pipeline -> train / eval -> flow helpers
-> entry points (cli, stages, flows).

Every import in every module counts, including the lazy ones inside functions: a lazy import
that runs upward is still a dependency a reader has to hold in their head. train and eval sit
on one level and do not import each other; neither do two entry points. Base modules (atomic,
device, digest, ...) may use each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module takes the level of the longest prefix listed here ("t2i" alone is the
# package itself, not a catch-all: a new top-level module must be placed explicitly).
LAYERS: list[tuple[str, ...]] = [
    ("t2i", "t2i.atomic", "t2i.config", "t2i.device", "t2i.digest", "t2i.dvc_plots", "t2i.grids", "t2i.nesting",
     "t2i.run_lock", "t2i.safe_load", "t2i.tracking", "t2i.tracking_export", "t2i.tracking_identity",
     "t2i.tracking_queue"),
    ("t2i.data",),
    ("t2i.text",),
    ("t2i.models",),
    ("t2i.pipeline",),
    ("t2i.mlflow_model",),  # the pipeline as an MLflow pyfunc model
    ("t2i.champion",),      # its registered versions and the champion alias
    ("t2i.train", "t2i.eval"),
    ("t2i.errors", "t2i.orchestration", "t2i.project_copy", "t2i.summary", "t2i.tracking_sweep"),  # helpers of the flows and tests
    ("t2i.serve",),
    ("t2i.cli", "stages", "flows"),
]
LEVEL = {prefix: i for i, names in enumerate(LAYERS) for prefix in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The longest LAYERS prefix of a dotted module name."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if n == 1 and parts[0] == "t2i" and len(parts) > 1:
            break
        if ".".join(parts[:n]) in LEVEL:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def project_imports(path: Path) -> set[str]:
    """Dotted names of the t2i / stages / flows modules ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from t2i import tracking` imports the module t2i.tracking
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if (ROOT / node.module.replace(".", "/") / f"{a.name}.py").is_file()}
    return {m for m in found if m.split(".")[0] in ("t2i", "stages", "flows")}


def modules() -> list[Path]:
    return sorted([*ROOT.glob("t2i/**/*.py"), *ROOT.glob("stages/*.py"), *ROOT.glob("flows/*.py")])


def test_no_module_imports_a_higher_layer_or_a_sibling_layer() -> None:
    wrong = []
    for path in modules():
        me = layer_of(module_name(path))
        for dep in project_imports(path):
            if dep == "t2i":
                continue  # the package itself: only sets environment defaults
            other = layer_of(dep)
            if LEVEL[other] > LEVEL[me] or (LEVEL[other] == LEVEL[me] and other != me and LEVEL[me] > 0):
                wrong.append(f"{module_name(path)} ({me}) imports {dep} ({other})")
    assert not wrong, "imports that run upward or sideways:\n" + "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    # The checker itself must be able to fail: a lazy import of eval inside a models function.
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from t2i.eval.nets import Trunk\n    from t2i import tracking\n", encoding="utf-8")
    deps = project_imports(source)
    assert "t2i.eval.nets" in deps and "t2i.tracking" in deps
    assert LEVEL[layer_of("t2i.eval.nets")] > LEVEL[layer_of("t2i.models.matcher")]
    assert layer_of("t2i.models.trunk") == "t2i.models" and layer_of("t2i.pipeline") == "t2i.pipeline"
    with pytest.raises(AssertionError, match="in no layer"):  # not silently in the base layer
        layer_of("t2i.newmodule")
