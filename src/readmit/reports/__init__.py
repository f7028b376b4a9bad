"""Self-contained reports (no CDN assets): charts and HTML pages people read offline."""
