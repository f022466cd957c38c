"""A workflow orchestrator on Celery and Redis.

The pure core (:mod:`models`, :mod:`validation`, :mod:`dag`, :mod:`compiler`) has no I/O;
:mod:`store`, :mod:`dispatch` and :mod:`coordinator` talk to Redis and the broker.
"""
