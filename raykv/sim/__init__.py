"""In-process, seeded, fault-injecting transport with virtual time, for tests."""
