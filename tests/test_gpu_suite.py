"""scripts/bench/gpu_suite.py in its CPU mode at toy sizes, so the GPU suite cannot rot between the
rare sessions that have a GPU: every step runs and leaves its figures in json + markdown."""
import json
import os

from scripts.bench import gpu_suite


def test_the_gpu_suite_runs_every_step_on_the_cpu_and_writes_its_figures(tmp_path):
    data = gpu_suite.main(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    steps = data["steps"]
    assert list(steps) == ["1. forward limit", "2. decode throughput",
                           "3. feature cache: cold, device decode, warm, end to end", "4. projections", "5. CUDA tests"]
    assert all(rate > 0 for rate in steps["1. forward limit"].values()) and len(steps["1. forward limit"]) == 2
    decode = steps["2. decode throughput"]
    assert decode["cpu_workers_img_s"] > 0 and decode["device_img_s"] > 0
    assert decode["max_levels"] <= 8 and decode["mean_levels"] < 1.0  # the two decode paths agree (64 px views)
    cache = steps["3. feature cache: cold, device decode, warm, end to end"]
    assert cache["cpu"]["results"]["warm"]["encoded"] == 0  # the warm re-run encodes nothing
    assert cache["cpu"]["results"]["cold"]["encoded"] == cache["device"]["results"]["cold"]["encoded"] > 0
    proj = steps["4. projections"]
    assert proj["one_run_s"] > 0 and proj["protocol_s"] > proj["one_run_s"]
    assert steps["5. CUDA tests"] == {"skipped": "no CUDA device"}
    # what was written to disk is what was returned, and the markdown names every step
    with open(tmp_path / "gpu_suite.json") as f:
        assert json.load(f)["steps"].keys() == steps.keys()
    md = open(tmp_path / "gpu_suite.md").read()
    assert all(f"## {name}" in md for name in steps) and "tiny sizes" in md
