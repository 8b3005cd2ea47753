"""raykv.actors.process: the GC tuning every coordinator and storage node process applies at start."""

import subprocess
import sys

from tests.ray.conftest import ROOT


def test_tune_gc_freezes_startup_objects_and_raises_thresholds():
    code = ("import gc; from raykv.actors.process import tune_gc, YOUNG_THRESHOLD; "
            "junk = [[i] for i in range(1000)]; before = gc.get_freeze_count(); t = tune_gc(); "
            "assert t[0] == YOUNG_THRESHOLD and t[0] > 700; "
            "assert gc.get_freeze_count() > before + 1000, (before, gc.get_freeze_count()); print('ok', t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr


def test_both_actor_shells_tune_gc_at_start():
    import inspect

    from raykv.actors import coordinator, storage_node
    for mod in (coordinator, storage_node):
        assert "tune_gc()" in inspect.getsource(mod), mod.__name__
