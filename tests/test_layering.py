"""Layering (issue 17, item 7): nothing in engine/ imports an entry script (train.py, scripts/),
and the two former import circles stay broken (engine/data/dassl_pickle.py <-> datasets.py,
engine/distributed.py <-> features.py), checked on every import statement, also those inside
functions."""
import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = {"train", "parse_test_res", "scripts"}


def imports(path):
    """Module names a file imports anywhere (relative imports resolved against its package)."""
    package = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names}
    return names


def test_engine_imports_no_entry_script():
    for path in glob.glob(os.path.join(ROOT, "engine", "**", "*.py"), recursive=True):
        bad = {n for n in imports(path) if n.split(".")[0] in ENTRY}
        assert not bad, f"{os.path.relpath(path, ROOT)} imports {bad}"


def test_the_two_import_circles_are_broken():
    def mod(rel):
        return imports(os.path.join(ROOT, *rel.split("/")))

    assert "engine.data.datasets" not in mod("engine/data/dassl_pickle.py")
    assert "engine.features" not in mod("engine/sharding.py")
    assert "engine.distributed" not in mod("engine/features.py")
    assert "engine.sharding" in mod("engine/features.py") and "engine.data.dassl_pickle" in mod("engine/data/datasets.py")


def test_torchrun_entry_sets_up_through_the_launch_function():
    names = imports(os.path.join(ROOT, "engine", "distributed.py"))
    assert "engine.launch" in names and "train" not in names
