"""The deploy workflow ``deploy_service``, in YAML (``deploy_service.yaml``).

test -> build -> release -> verify; notify reports the outcome whatever happened.  A
failed verify fails the run, and the release is undone by its compensation
(``deploy.rollback``), which puts back the version it replaced.
"""
