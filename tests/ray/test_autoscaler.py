"""raykv under Ray's real autoscaler (fake multi-node provider), run in a subprocess with its own Ray cluster.

See autoscaler_driver.py: traffic makes raykv ask Ray's autoscaler for a machine, a storage node starts there,
joins by itself and serves, and nothing written is lost. (Why the way back down is tested elsewhere: the driver's
docstring.)
"""

import os
import subprocess
import sys

import pytest

from tests.ray.conftest import ROOT

pytestmark = pytest.mark.ray


def test_traffic_makes_ray_autoscaler_add_a_machine_whose_storage_node_joins_by_itself():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "ray", "autoscaler_driver.py")],
                       capture_output=True, text=True, timeout=500, cwd=ROOT, env=env)
    out = p.stdout
    assert p.returncode == 0 and "ALL OK" in out, f"{out}\n{p.stderr[-5000:]}"
    for line in ("scale-up ok", "join ok", "no key lost"):
        assert line in out
