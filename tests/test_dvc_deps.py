"""Every t2i module a stage imports is a dep of that stage in dvc.yaml, or a library edit would
not rerun it (`dvc repro` would keep a result the edited code no longer produces)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = {name: spec for name, spec in yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"].items()
          if spec["cmd"].startswith("python -m stages.")}

# Import the stage module and list the t2i files it pulled in (what its run can execute).
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())
                        if (n == "t2i" or n.startswith("t2i.")) and getattr(m, "__file__", None))))
"""


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_every_imported_module(stage: str) -> None:
    module = STAGES[stage]["cmd"].split()[2]
    out = subprocess.run([sys.executable, "-c", PROBE, module], cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    imported = [Path(f).resolve().relative_to(REPO).as_posix() for f in json.loads(out.strip().splitlines()[-1])]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]]
    missing = [f for f in imported if f != "t2i/__init__.py"
               and not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not missing, f"dvc.yaml stage {stage!r} imports {missing} but does not list them in its deps"
