"""A real `torchrun --nproc_per_node=2` (gloo, CPU): ranks train a few steps and end identical."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_train_fixtures import make_dataset

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import torch
from safetensors.torch import save_file
from t2i.train import Outputs, init_distributed, load_train_data, train
from t2i.train.distributed import shutdown
from test_train_fixtures import small_params
ctx = init_distributed("cpu")
data = load_train_data("data/prepared", "data/embeddings")
result = train(small_params(steps=4, checkpoint_every=2), data, Outputs(), ctx)
s = result.state
state = {{}}
for name, m in (("g", s.g_raw), ("d", s.d_raw), ("ema", s.ema)):
    state.update({{f"{{name}}.{{k}}": v.detach().contiguous().clone() for k, v in m.state_dict().items()}})
save_file(state, f"rank{{ctx.rank}}.safetensors")
print("world", ctx.world_size, "rank", ctx.rank, "done")
shutdown(ctx)
"""


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    make_dataset(tmp_path, n_images=64)
    (tmp_path / "worker.py").write_text(WORKER.format(tests=str(REPO / "tests")))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "worker.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "world 2 rank 1 done" in out.stdout
    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert r0.keys() == r1.keys() and any(k.startswith("g.") for k in r0)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # Only rank 0 wrote outs; the checkpoint is at the last step.
    assert (tmp_path / "models" / "generator.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "last.safetensors").is_file()
