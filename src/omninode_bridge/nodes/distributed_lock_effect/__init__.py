"""NodeDistributedLockEffect: the engine as an ONEX effect node (and its HTTP service)."""
