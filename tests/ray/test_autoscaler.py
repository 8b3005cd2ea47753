"""raykv under Ray's real autoscaler (fake multi-node provider), run in a subprocess with its own Ray cluster.

See autoscaler_driver.py: traffic makes raykv ask Ray's autoscaler for a machine, a storage node starts there,
joins by itself and serves, and nothing written is lost; then, idle, raykv drains that machine and Ray's
autoscaler terminates it.
"""

import pytest

from tests.ray.conftest import run_driver_script

pytestmark = pytest.mark.ray


def test_traffic_makes_ray_autoscaler_add_a_machine_whose_storage_node_joins_by_itself_and_idle_drains_it():
    run_driver_script("autoscaler_driver.py", ("scale-up ok", "join ok", "no key lost", "drain ok", "scale-down ok"))
