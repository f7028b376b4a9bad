"""The one HTML page shell of every report readmit writes: self-contained (inline CSS, no script,
no external asset), so a page renders offline from the artifact store, a Prefect artifact link or
an e-mail attachment."""

from __future__ import annotations

from html import escape

BASE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#111827}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;font-size:12px;width:100%;margin:8px 0}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 6px;vertical-align:middle}
th{background:#f3f4f6}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600;
font-size:13px;text-transform:uppercase}
.meta,.muted{color:#4b5563;font-size:13px}
"""


def page(title: str, body: str, css: str = "") -> str:
    """A complete HTML document: `title` (escaped here), `body` (already HTML) and the page's own
    `css` after the shared base."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{BASE_CSS}{css}</style></head>"
        f"<body>{body}</body></html>"
    )
