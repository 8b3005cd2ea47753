"""In-process, seeded, fault-injecting transport with virtual time, for tests (see docs/simulation.md)."""

from raykv.sim.loop import SimulationDeadlock, VirtualTimeLoop
from raykv.sim.network import Faults, SimNetwork, SimTransport
from raykv.sim.simulation import SIM_CONFIG, Simulation

__all__ = ["Faults", "SIM_CONFIG", "SimNetwork", "SimTransport", "Simulation", "SimulationDeadlock",
           "VirtualTimeLoop"]
