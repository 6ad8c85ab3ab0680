"""scripts/demo.py: every method of its METHODS list trains and evaluates through train.py and gets
a row of the table and a line of the figure (a tiny CLIP stands in for RN50; 1 shot, 50 test images);
a method's label, config and training come from its trainer's declared protocol where it has one."""
import os

import pytest

from engine import TRAINER_REGISTRY
from engine.errors import ConfigError
from engine.protocol import Protocol, Variant
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
    assert [row.split(" | ")[0][2:] for row in rows] == [m.label for m in demo.methods()]
    for row in rows:
        cells = row.strip("| ").split(" | ")[1:]
        assert len(cells) == 1 and 0.0 <= float(cells[0]) <= 100.0
    assert "CLIP RN50" in table and "Shortened" in table and demo.resolve("CoOp").shortened in table
    assert (out / "results.png").stat().st_size > 10_000
    assert table.strip() in capsys.readouterr().out
    # the enhanced run started from the base StrongBase wrote
    enhanced = [m for m in demo.methods() if m.enhanced]
    assert enhanced and os.path.isfile(out / "strong_base" / "FashionMNIST" / "rn50_1shots" / "model.pth.tar")
    with open(next((out / "TaskRes").glob("*_enhanced_*/seed1/config.yaml"))) as f:
        assert "strong_base/FashionMNIST/rn50_1shots/model.pth.tar" in f.read()


def test_demo_methods_name_registered_trainers_and_existing_configs():
    import trainers  # noqa: F401  (registers the trainers)
    from engine import TRAINER_REGISTRY

    for method in demo.methods():
        assert method.trainer in TRAINER_REGISTRY, method
        for shots in demo.SHOTS:
            assert os.path.isfile(method.config(shots)), (method, shots)
    labels = [m.label for m in demo.methods()]
    assert len(set(labels)) == len(labels)
    # names as in the papers, and zero-shot (a training-free trainer) evaluated once
    assert labels[:5] == ["Zero-shot CLIP", "Linear probe", "CoOp", "CLIP-Adapter", "Tip-Adapter-F"]
    assert [m.few_shot for m in demo.methods()] == [False] + [True] * (len(labels) - 1)
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


def test_a_method_joins_by_its_name_and_its_protocol(monkeypatch, tmp_path):
    import trainers  # noqa: F401  (registers the trainers)

    folder = tmp_path / "Toy"
    folder.mkdir()
    for stem in ("rn50_k1", "rn50_k4", "other"):
        (folder / f"{stem}.yaml").write_text("")

    class Toy:
        protocol = Protocol(label="Toy-Tuning", config=lambda dataset, shots, family: f"{family}_k{shots}",
                            variants=(Variant(), Variant("wide", opts=("TRAINER.TOY.WIDTH", "8"), label="Toy (wide)")))

    class Plain:  # declares nothing: the trainer name, and its folder's only yaml
        pass

    class Frozen:
        protocol = Protocol(label="Frozen", trains=False)

    monkeypatch.setattr(demo, "TRAINER_CONFIGS", str(tmp_path))
    for name, cls in (("Toy", Toy), ("Plain", Plain), ("Frozen", Frozen)):
        monkeypatch.setitem(TRAINER_REGISTRY._obj_map, name, cls)
    (tmp_path / "Plain").mkdir()
    (tmp_path / "Plain" / "only.yaml").write_text("")
    (tmp_path / "Frozen").mkdir()
    (tmp_path / "Frozen" / "a.yaml").write_text("")

    toy = demo.resolve("Toy")
    assert (toy.label, toy.few_shot, toy.opts_for(4)) == ("Toy-Tuning", True, ())
    assert toy.config(4) == str(folder / "rn50_k4.yaml") and toy.config(1) == str(folder / "rn50_k1.yaml")
    wide = demo.resolve("Toy-wide")
    assert wide.label == "Toy (wide)" and wide.opts_for(1) == ("TRAINER.TOY.WIDTH", "8")
    plain = demo.resolve("Plain")
    assert plain.label == "Plain" and plain.config(16) == str(tmp_path / "Plain" / "only.yaml")
    assert demo.resolve("Frozen").few_shot is False

    monkeypatch.setattr(demo, "METHODS", ["Toy", "Plain"])
    assert [m.label for m in demo.methods()] == ["Toy-Tuning", "Plain"]

    (tmp_path / "Plain" / "second.yaml").write_text("")
    with pytest.raises(ConfigError, match="Plain declares no config rule"):
        demo.resolve("Plain").config(1)
    with pytest.raises(ConfigError):
        demo.resolve("NoSuchTrainer")
