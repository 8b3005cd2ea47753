"""One Ray instance for the whole session (tests/ray), with fast failure detection.

Tests that need several Ray nodes (``ray.cluster_utils.Cluster``) run in a
subprocess so they never fight this instance.
"""

import os
import sys
import shutil
import tempfile

import pytest

from tests.conftest import wait_for  # noqa: F401 - the Ray tests import it from here

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SYSTEM_CONFIG = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                 "health_check_initial_delay_ms": 0}


@pytest.fixture(scope="session")
def ray_session():
    import ray
    if ray.is_initialized():
        ray.shutdown()
    os.environ.setdefault("PYTHONPATH", ROOT)
    ray.init(address="local",            # our own instance, even if one runs on this machine
             num_cpus=4, namespace="raykv", include_dashboard=False, log_to_driver=False,
             _system_config=SYSTEM_CONFIG)
    yield ray
    ray.shutdown()


@pytest.fixture
def store_dir():
    """A fresh data_dir, removed after the test (whose ``finally`` shut its store down)."""
    d = tempfile.mkdtemp(prefix="raykv-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_driver(code: str, timeout: float = 180) -> str:
    """Run ``code`` in a separate Python process (a second Ray driver); return its stdout, fail on error."""
    import subprocess
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                       cwd=ROOT, env=env)
    assert p.returncode == 0, f"driver failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-4000:]}"
    return p.stdout


def run_driver_script(name: str, expect: tuple, timeout: float = 500) -> str:
    """Run ``tests/ray/<name>`` in a separate Python process with a Ray cluster of its own (no ``RAY_ADDRESS``);
    fail unless it exits 0 having printed ``ALL OK`` and every line start in ``expect``. Returns its stdout."""
    import subprocess
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "ray", name)], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, env=env)
    out = p.stdout
    assert p.returncode == 0 and "ALL OK" in out, f"{out}\n{p.stderr[-5000:]}"
    for line in expect:
        assert line in out, f"{line!r} not in:\n{out}"
    return out
