"""The research as a plan of stages: skips what is done, survives interruption, shards across hosts."""
