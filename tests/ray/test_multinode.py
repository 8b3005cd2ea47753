"""Several Ray machines on one host (ray.cluster_utils.Cluster), run in a subprocess (its own Ray instance).

See multinode_driver.py for the checks: placement on raykv_storage machines,
replicas on distinct Ray nodes, a Ray node removed under traffic, N copies restored.
"""

import pytest

from tests.ray.conftest import run_driver_script

pytestmark = pytest.mark.ray


def test_three_storage_machines_replicas_spread_and_a_machine_loss_is_repaired():
    run_driver_script("multinode_driver.py", ("placement ok", "distinct machines ok", "restarted elsewhere",
                                              "N copies restored", "auto-join ok", "scale-down drain ok"), 400)
