"""scripts/demo.py: every method of its METHODS list trains and evaluates through train.py and gets
a row of the table and a line of the figure (a tiny CLIP stands in for RN50; 1 shot, 50 test images)."""
import os

import pytest

from scripts import demo
from tests.clip_fixtures import save_tiny_clip
from tests.test_datasets_fashion_mnist import needs_debian


@needs_debian
def test_demo_runs_every_method_into_the_table_and_figure(tmp_path, capsys):
    cache = tmp_path / "clip"
    cache.mkdir()
    # A file named RN50.pt in the cache is what the demo takes for real weights: here a tiny CLIP.
    save_tiny_clip(str(cache / "RN50.pt"), vision="vit")
    out = tmp_path / "out"
    demo.main(["--output", str(out), "--data", str(tmp_path / "data"), "--clip-cache", str(cache),
               "--shots", "1", "--test-per-class", "5", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
               # small searches: their grids are tested in test_methods.py
               "TRAINER.LINEAR_PROBE.NUM_STEP", "2", "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[10, 5]"])

    table = (out / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| method", "| ---"))]
    assert [row.split(" | ")[0][2:] for row in rows] == [m.label for m in demo.METHODS]
    for row in rows:
        cells = row.strip("| ").split(" | ")[1:]
        assert len(cells) == 1 and 0.0 <= float(cells[0]) <= 100.0
    assert "CLIP RN50" in table and "Shortened" in table and demo.METHODS[2].shortened in table
    assert (out / "results.png").stat().st_size > 10_000
    assert table.strip() in capsys.readouterr().out
    # the enhanced run started from the base StrongBase wrote
    enhanced = [m for m in demo.METHODS if m.enhanced]
    assert enhanced and os.path.isfile(out / "strong_base" / "FashionMNIST" / "rn50_1shots" / "model.pth.tar")
    with open(next((out / "TaskRes").glob("*_enhanced_*/seed1/config.yaml"))) as f:
        assert "strong_base/FashionMNIST/rn50_1shots/model.pth.tar" in f.read()


def test_demo_methods_name_registered_trainers_and_existing_configs():
    import trainers  # noqa: F401  (registers the trainers)
    from engine import TRAINER_REGISTRY

    for method in demo.METHODS:
        assert method.trainer in TRAINER_REGISTRY, method
        for shots in demo.SHOTS:
            assert os.path.isfile(method.config(shots)), (method, shots)
    labels = [m.label for m in demo.METHODS]
    assert len(set(labels)) == len(labels)
    with pytest.raises(SystemExit):
        demo.main(["--shots", "x"])


def test_the_extra_opts_give_each_method_only_the_trainer_keys_it_reads():
    """The demo's extra opts reach every method; train.py refuses another trainer's key, so each run
    gets only its own group's (and every non-TRAINER opt)."""
    extra = ["--root", "d", "OPTIM.LR", "1", "TRAINER.COOP.N_CTX", "4", "TRAINER.LINEAR_PROBE.NUM_STEP", "2",
             "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5"]
    assert demo.own_opts(extra, "TaskRes") == ["--root", "d", "OPTIM.LR", "1", "TRAINER.TaskRes.RESIDUAL_SCALE", "0.5"]
    assert demo.own_opts(extra, "CoOp") == ["--root", "d", "OPTIM.LR", "1", "TRAINER.COOP.N_CTX", "4"]
    assert demo.own_opts(extra, "LinearProbe") == ["--root", "d", "OPTIM.LR", "1", "TRAINER.LINEAR_PROBE.NUM_STEP", "2"]
