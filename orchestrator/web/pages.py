"""The web UI's HTML: a page shell per page (the data comes from ``/ui/data/...`` and is
drawn by the page's script), and the sign-in form.

Every value put into HTML goes through :func:`html.escape`; pages carry no inline script
or style, so the Content-Security-Policy (:data:`SECURITY_HEADERS`) allows only the UI's
own files.
"""

from __future__ import annotations

from html import escape

from orchestrator.web.session import CSRF_FIELD, Viewer

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
"""Headers of every UI page: own scripts and styles only, no framing, no referrer (so
a run's address does not leak to Flower or elsewhere), nothing cached."""

NAV = (("runs", "/ui/runs", "Runs"), ("workflows", "/ui/workflows", "Workflows"),
       ("workers", "/ui/workers", "Workers and queues"))


def _head(title: str, script: str | None, csrf: str = "") -> str:
    js = f'<script type="module" src="/ui/static/{script}.js"></script>' if script else ""
    meta = f'<meta name="csrf-token" content="{escape(csrf)}">' if csrf else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · orchestrator</title>{meta}"
        '<link rel="stylesheet" href="/ui/static/ui.css">'
        f'<link rel="icon" href="data:,">{js}</head>')


def page(viewer: Viewer, section: str, title: str, script: str,
         data: dict[str, str] | None = None) -> str:
    """A signed-in page: the navigation, who is signed in, and an empty ``main`` that
    ``script`` fills; ``data`` become the body's ``data-*`` attributes."""
    attrs = {"page": script, "can-write": "true" if viewer.can("runs:write") else "false",
             **(data or {})}
    body_attrs = " ".join(f'data-{k}="{escape(v)}"' for k, v in attrs.items())
    current = ' aria-current="page"'
    links = "".join(f'<a href="{href}"{current if key == section else ""}>{label}</a>'
                    for key, href, label in NAV)
    scopes = ", ".join(sorted(viewer.scopes))
    return (
        f"{_head(title, script, viewer.csrf)}<body {body_attrs}>"
        '<a class="skip" href="#main">Skip to content</a>'
        '<header class="top"><span class="brand">orchestrator</span>'
        f'<nav aria-label="Main">{links}</nav>'
        '<form class="signout" method="post" action="/ui/logout">'
        f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(viewer.csrf)}">'
        f'<span class="who">Signed in as <strong>{escape(viewer.name)}</strong> '
        f'<span class="scopes">({escape(scopes)})</span></span>'
        '<button type="submit">Sign out</button></form></header>'
        f'<main id="main" tabindex="-1"><h1 id="title">{escape(title)}</h1>'
        '<p id="status-line" class="status-line" role="status" aria-live="polite"></p>'
        '<div id="content"></div></main></body></html>')


def login(csrf: str, next_url: str, message: str = "") -> str:
    """The sign-in form: one API token field, posted (never in the URL)."""
    note = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    return (
        f"{_head('Sign in', None)}<body>"
        '<main id="main" class="login"><h1>Sign in</h1>'
        "<p>Sign in with an API token from the server's <code>ORCH_API_TOKENS</code>. "
        "The page then keeps a session cookie; the token is not stored in the browser.</p>"
        f"{note}"
        '<form method="post" action="/ui/login">'
        f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(csrf)}">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        '<label for="token">API token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" '
        'required minlength="16">'
        '<button type="submit">Sign in</button></form></main></body></html>')


def forbidden(viewer: Viewer, scope: str) -> str:
    """A page the session's token may not see."""
    return (
        f"{_head('Not allowed', None, viewer.csrf)}<body><main id=\"main\">"
        "<h1>Not allowed</h1>"
        f"<p>The token of this session ({escape(viewer.name)}) does not grant the scope "
        f"<code>{escape(scope)}</code>. Sign in with a token that does.</p>"
        '<p><a href="/ui/runs">Back to the runs</a></p></main></body></html>')
