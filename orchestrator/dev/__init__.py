"""Local development tooling: a private Redis server, the local stack, deadline waiting and
process-group start/stop, shared by the CLI's ``up``/``demo``, the tests and the bench."""
