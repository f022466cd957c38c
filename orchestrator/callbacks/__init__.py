"""Run-end callbacks: signing and verifying (:mod:`signing`), delivery (:mod:`delivery`).
Registrations are kept by the store (:mod:`orchestrator.store.callbacks`)."""
