"""The pure core: workflow models, validation, the DAG, the compiler and its plan, states,
conditions, trigger rules and the step-function registry.  No I/O, no Celery app: every
module here is a plain function of its arguments (``yamlio.load_yaml`` reads one file)."""
