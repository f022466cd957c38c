"""The web UI, served by the API process under ``/ui`` (see docs/ui.md).

:func:`install` mounts it on the API app: :mod:`.routes` (pages, data, sign-in),
:mod:`.session` (cookies and CSRF), :mod:`.views` (what each page shows), :mod:`.pages`
(the HTML), :mod:`.layout` (graph layout) and :mod:`.timeline` (critical path,
percentiles); the browser side is ``static/``.
"""

from orchestrator.web.routes import install

__all__ = ["install"]
