"""The Ray backend on a local cluster: same results as the local backend; a killed task is retried and
reported."""

import os

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from builders import save_st
from refs import planted

import lorascope
from lorascope.errors import LorascopeError

ray = pytest.importorskip("ray", reason="needs the ray extra")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pair")
    g = torch.Generator().manual_seed(0)
    base, tuned = {}, {}
    for i in range(3):
        for mod, shape in (("q", (48, 32)), ("mlp.up", (64, 32)), ("mlp.down", (32, 64))):
            key = f"model.layers.{i}.{mod}.weight"
            w = torch.randn(*shape, generator=g)
            base[key] = w
            tuned[key] = w + torch.tensor(planted(*shape, [3.0, 1.0, 0.2], seed=i)).float()
    base["model.norm.weight"] = torch.ones(32)
    tuned["model.norm.weight"] = torch.full((32,), 1.1)
    return save_st(tmp / "b.safetensors", base), save_st(tmp / "t.safetensors", tuned)


def crash_once(marker_dir):
    """A compute function whose worker dies mid-task, once in the whole run."""
    from lorascope.analysis import compute_delta

    def compute(d, opts):
        marker = os.path.join(marker_dir, "crashed")
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process is killed, as by a node failure
        return compute_delta(d, opts)

    return compute


def test_ray_results_equal_local(cluster, pair):
    local = lorascope.analyze(*pair)
    remote = lorascope.analyze(*pair, backend="ray")
    cols = list(local.modules.columns)
    pd.testing.assert_frame_equal(local.modules[cols], remote.modules[cols], rtol=1e-6)
    for name, sigma in local.spectra.items():
        assert remote.spectrum(name) == pytest.approx(sigma, rel=1e-6)
    pd.testing.assert_frame_equal(local.vectors, remote.vectors)
    assert remote.summary["options"]["backend"] == "ray"


def test_killed_task_is_retried_and_reported(cluster, pair, tmp_path):
    from lorascope.analysis import Options, build_results, open_inputs
    from lorascope.delta import plan_deltas
    from lorascope.ray_backend import run_ray

    base, tuned = open_inputs(*pair)
    plan = plan_deltas(base, tuned)
    computed = run_ray(plan, Options(), progress=False, compute=crash_once(str(tmp_path)))
    assert all(c is not None for c in computed)
    retries = [w for w in plan.warnings if "retried" in w["reason"]]
    assert len(retries) == 1 and "attempt 2 of 3" in retries[0]["reason"]
    res = build_results(plan, computed, [], {}, 0.0)
    assert len(res.modules) == 9


def test_a_task_failing_every_time_stops_the_run_naming_it(cluster, pair, tmp_path):
    from lorascope.analysis import Options, open_inputs
    from lorascope.delta import plan_deltas
    from lorascope.ray_backend import run_ray

    def always_crash(d, opts):
        os._exit(1)

    plan = plan_deltas(*open_inputs(*pair))
    with pytest.raises(LorascopeError, match="failed after 3 attempt"):
        run_ray(plan, Options(), progress=False, compute=always_crash)


def test_bad_input_in_a_task_stops_at_once_with_its_own_message(cluster, pair, tmp_path):
    base = dict(load_file(str(pair[0])))
    base["model.layers.1.q.weight"][2, 3] = float("nan")
    bad = save_st(tmp_path / "nan.safetensors", base)
    with pytest.raises(LorascopeError) as err:
        lorascope.analyze(bad, pair[1], backend="ray")
    message = str(err.value)
    assert message.startswith(f"{bad}: tensor model.layers.1.q.weight holds 1 NaN or Inf")
    assert "Traceback" not in message and "ray::" not in message


def test_groups_keep_order_and_bound_cost():
    from lorascope.ray_backend import group_deltas

    class D:
        family, module = "dense", None

        def __init__(self, m, n):
            self.shape = (m, n)

    deltas = [D(4096, 4096), D(10, 10), D(10, 10), D(4096, 11008), D(10, 10)]
    groups = group_deltas(deltas, max_cost=4096 * 4096)
    assert [i for g in groups for i in g] == list(range(5))
    assert groups[0] == [0] and [3] in groups


def test_ray_writes_the_same_bytes_as_local_workers(cluster, tmp_path):
    """Determinism: one pair (streamed Gram, column blocks, small exact) gives byte-identical tables and
    spectra with 1 worker, 2 workers and Ray tasks."""
    g = torch.Generator().manual_seed(3)
    shapes = {
        "model.layers.0.mlp.up_proj.weight": (600, 280),
        "model.layers.0.mlp.down_proj.weight": (280, 600),
        "model.layers.0.self_attn.q_proj.weight": (64, 48),
    }
    base = {k: torch.randn(*s, generator=g).bfloat16() for k, s in shapes.items()}
    tuned = {
        k: (v.double() + torch.tensor(planted(*shapes[k], [2.0, 1.0, 0.5], seed=1))).bfloat16()
        for k, v in base.items()
    }
    base["model.norm.weight"], tuned["model.norm.weight"] = torch.ones(280), torch.full((280,), 1.01)
    b, t = save_st(tmp_path / "b.safetensors", base), save_st(tmp_path / "t.safetensors", tuned)
    folders = [
        lorascope.analyze(b, t, workers=1).save(tmp_path / "w1"),
        lorascope.analyze(b, t, workers=2).save(tmp_path / "w2"),
        lorascope.analyze(b, t, backend="ray").save(tmp_path / "ray"),
    ]
    for name in ("modules.csv", "singular_values.safetensors", "vectors.csv"):
        first = (folders[0] / name).read_bytes()
        assert all((f / name).read_bytes() == first for f in folders[1:]), name
