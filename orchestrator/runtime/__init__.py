"""The runtime: the run protocol (:mod:`progress`), the coordinator that starts and reads
runs, the Celery configuration, the catalog of workflows, canvases built from plans and
the step context.  It talks to Redis only through :mod:`orchestrator.store`."""
