"""Several Ray machines on one host (ray.cluster_utils.Cluster), run in a subprocess (its own Ray instance).

See multinode_driver.py for the checks: placement on raykv_storage machines,
replicas on distinct Ray nodes, a Ray node removed under traffic, N copies restored.
"""

import os
import subprocess
import sys

import pytest

from tests.ray.conftest import ROOT

pytestmark = pytest.mark.ray


def test_three_storage_machines_replicas_spread_and_a_machine_loss_is_repaired():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "ray", "multinode_driver.py")],
                       capture_output=True, text=True, timeout=400, cwd=ROOT, env=env)
    out = p.stdout
    assert p.returncode == 0 and "ALL OK" in out, f"{out}\n{p.stderr[-5000:]}"
    for line in ("placement ok", "distinct machines ok", "restarted elsewhere", "N copies restored", "auto-join ok",
                 "scale-down drain ok"):
        assert line in out
