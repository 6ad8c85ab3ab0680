"""Scale-out of the feature cache on the CPU: extraction sharded over 2 gloo processes
(engine/distributed.py, launched by torchrun) builds the same cache bytes as one process, and
two processes writing one bundle at once lose no rows (engine/features.py's merge under flock)."""
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine import distributed
from engine.config import get_cfg_default
from engine.data.datasets import Datum
from engine.data.transforms import build_transform
from engine.features import FeatureStore
from helpers import ROOT, make_image_folder, tiny_clip, write_tiny_config

WORLD = 2


# ---- encode_sharded: which rank encodes what, and the order of the gathered rows ----------
def _shard_worker(rank, init_file, cases, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        for case, (keys_by_rank, is_train, batch) in enumerate(cases):
            seen = []

            def fake_encode_views(encode, items, transform, keys, batch_size, *rest, **kwargs):
                seen.append((list(keys), kwargs.get("per_batch")))
                return torch.tensor([[float(i), float(v)] for i, v in keys])

            try:
                out = distributed.encode_sharded(fake_encode_views, None, None, None, keys_by_rank[rank], batch,
                                                 0, "cpu", is_train)
                results[case, rank] = (seen, out.tolist(), distributed.is_writer())
            except RuntimeError as e:
                results[case, rank] = str(e)
    finally:
        dist.destroy_process_group()


def test_ranks_encode_whole_batches_gather_every_row_in_order_and_must_agree(tmp_path):
    keys = [(i, v) for v in range(2) for i in range(7)]  # 14 keys -> batches of 3: 3 3 3 3 2
    cases = [([keys, keys], False, 3),
             ([[(0, 0), (1, 0)], [(0, 0)]], False, 3),  # the ranks disagree on what is missing
             ([keys, keys], True, 4)]  # training: whole images (2 views each), 2 images a batch
    results = mp.Manager().dict()
    mp.spawn(_shard_worker, args=(str(tmp_path / "init"), cases, results), nprocs=WORLD)
    (seen0, out0, writer0), (seen1, out1, writer1) = results[0, 0], results[0, 1]
    assert seen0 == [(keys[0:3] + keys[6:9] + keys[12:14], None)]  # batches 0, 2, 4
    assert seen1 == [(keys[3:6] + keys[9:12], None)]  # batches 1, 3
    expected = [[float(i), float(v)] for i, v in keys]
    assert out0 == expected and out1 == expected
    assert (writer0, writer1) == (True, False)  # only rank 0 writes bundles
    assert all("ranks disagree" in results[1, r] for r in range(WORLD))
    # training keys are planned as one process batches them: images {0,1}, {2,3}, {4,5}, {6}
    (train0, tout0, _), (train1, tout1, _) = results[2, 0], results[2, 1]
    views_of = lambda images: [(i, v) for i in images for v in range(2)]  # noqa: E731
    assert train0 == [(views_of([0, 1, 4, 5]), 2)] and train1 == [(views_of([2, 3, 6]), 2)]
    assert tout0 == expected and tout1 == expected


def test_outside_torchrun_encode_sharded_is_the_plain_call():
    calls = []
    out = distributed.encode_sharded(lambda *a: calls.append(a) or torch.ones(2, 1), "enc", "items", "tfm",
                                     [(0, 0), (1, 0)], 5, 0, "cpu", True)
    assert calls == [("enc", "items", "tfm", [(0, 0), (1, 0)], 5, 0, "cpu", True)]
    assert out.shape == (2, 1) and distributed.is_writer()


# ---- torchrun on the CLI: the same cache bytes as one process ------------------------------
def _cache_files(root):
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".pt"):
                path = os.path.join(folder, name)
                found[os.path.relpath(path, root)] = open(path, "rb").read()
    return found


def test_two_process_extraction_builds_the_single_process_cache_byte_for_byte(tmp_path):
    data = make_image_folder(tmp_path / "data")
    cfg = write_tiny_config(tmp_path / "cfg.yaml", tiny_clip(tmp_path), epochs=4, batch=4)
    args = ["--root", data, "--seed", "1", "--trainer", "TaskRes", "--config-file", cfg,
            "--output-dir", str(tmp_path / "out"), "DATASET.NUM_SHOTS", "4",
            "FEATURE_CACHE.TRAIN_VIEWS", "3", "FEATURE_CACHE.ENCODE_BATCH_SIZE", "4"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    single = subprocess.run(
        [sys.executable, "-c", "import sys, train; from engine.features import extract_features; "
         "from engine.trainer import build_trainer; "
         "extract_features(build_trainer(train.setup_cfg(train.build_parser().parse_args(sys.argv[1:]))))",
         *args, "FEATURE_CACHE.DIR", str(tmp_path / "single")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    sharded = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
         "-m", "engine.distributed", "extract", *args, "FEATURE_CACHE.DIR", str(tmp_path / "sharded")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert sharded.returncode == 0, sharded.stderr
    assert "Rank 0/2 encodes" in sharded.stderr and "Feature extraction on 2 processes done" in sharded.stderr
    one, two = _cache_files(tmp_path / "single"), _cache_files(tmp_path / "sharded")
    assert len(one) == 5  # 3 training views, val, test
    assert sorted(one) == sorted(two)
    for name in one:
        assert one[name] == two[name], name
        bundle = torch.load(os.path.join(tmp_path / "sharded", name), weights_only=True)
        assert bundle["features"].shape[0] == len(bundle["keys"]) > 0


def test_extract_outside_torchrun_says_how_to_launch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.run([sys.executable, "-m", "engine.distributed", "extract", "--trainer", "TaskRes"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "run this under torchrun" in proc.stderr


# ---- two processes writing one bundle at once ----------------------------------------------
def _writer(rank, items_by_round, cache, barrier, counts):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (8, 8)
    tfm = build_transform(cfg, False)
    store = FeatureStore(cache)
    for items in items_by_round[rank]:
        barrier.wait()  # both processes read, encode and merge the same bundle at the same moment
        store.features(lambda x: x.mean(dim=(2, 3)), items, tfm, "enc", "tfm", "shared/test", ["test"],
                       is_train=False, dtype=torch.float32)
    counts[rank] = store.encoded


def test_concurrent_writers_of_one_bundle_lose_no_rows(tmp_path):
    data = make_image_folder(tmp_path / "d", classes=("a", "b", "c", "d"), per_class=6, size=(12, 12))
    items = [Datum(impath=os.path.join(data, c, f"{i}.jpg"), label=j) for j, c in enumerate("abcd") for i in range(6)]
    rounds = 6  # each round, each process adds 2 new images and 1 the other process also asks for
    by_rank = {0: [], 1: []}
    for r in range(rounds):
        shared = items[4 * r]
        by_rank[0].append([shared, items[4 * r + 1], items[4 * r + 2]])
        by_rank[1].append([shared, items[4 * r + 3]])
    cache = str(tmp_path / "cache")
    ctx = mp.get_context("spawn")
    barrier, counts = ctx.Barrier(2), ctx.Manager().dict()
    procs = [ctx.Process(target=_writer, args=(r, by_rank, cache, barrier, counts)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]

    store = FeatureStore(cache)
    path = store.bundle_path("enc", "tfm", "test", "shared/test")
    bundle = torch.load(path, weights_only=True)
    assert len(bundle["keys"]) == len(set(bundle["keys"])) == 4 * rounds  # every row, once
    # and they are the right rows: a fresh single-process encoding of all images agrees
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (8, 8)
    fresh = FeatureStore(str(tmp_path / "fresh")).features(
        lambda x: x.mean(dim=(2, 3)), items, build_transform(cfg, False), "enc", "tfm", "shared/test", ["test"],
        is_train=False, dtype=torch.float32)[0]
    stored = dict(zip(bundle["keys"], bundle["features"]))
    from engine.features import image_key

    torch.testing.assert_close(torch.stack([stored[image_key(it.impath)] for it in items]), fresh)
    # duplicates only inside the race: a shared image is encoded at most once per process
    assert 4 * rounds <= counts[0] + counts[1] <= 4 * rounds + rounds


if __name__ == "__main__":
    pytest.main([__file__])
