"""Local development tooling: a private Redis server, the local stack, deadline waiting,
process-group start/stop and generated workflow shapes, shared by the CLI's ``up``/``demo``,
the tests and the bench."""
