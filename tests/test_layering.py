"""The layering rule of docs/architecture.md: storage and cluster never import ray."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "raykv"


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_storage_and_cluster_never_import_ray():
    offenders = []
    for package in ("storage", "cluster"):
        files = sorted((ROOT / package).rglob("*.py"))
        assert files, f"raykv/{package} has no modules"
        for path in files:
            bad = {n for n in _imports(path) if n == "ray" or n.startswith("ray.")}
            if bad:
                offenders.append(f"{path.relative_to(ROOT.parent)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_an_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    import ray.util\n")
    assert "ray.util" in _imports(bad)


def test_every_storage_and_cluster_module_imports_first_in_a_fresh_interpreter():
    """Each module must import on its own, whatever was imported before: an import cycle (codec <-> vclock
    did this once) only shows when the cycle's other end is imported first, as it is in an actor process."""
    import subprocess
    import sys

    modules = [f"raykv.{p}.{f.stem}" for p in ("storage", "cluster") for f in sorted((ROOT / p).glob("*.py"))
               if f.stem != "__init__"]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    failed = []
    for m in modules:
        p = subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True,
                           cwd=ROOT.parent, timeout=60)
        if p.returncode:
            failed.append(f"{m}: {p.stderr.strip().splitlines()[-1]}")
    assert not failed, "\n".join(failed)
