"""The deploy workflow ``deploy_service``, in YAML (``deploy_service.yaml``).

test -> build -> release -> verify; a failed verify is handled by rollback, and notify
reports the outcome whatever happened.
"""
