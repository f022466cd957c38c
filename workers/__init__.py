"""The worker side: the Celery app, the step wrapper task and the join task."""
