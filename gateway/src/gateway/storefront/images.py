"""Product images: whether catalog's can be shown as they are, and the placeholder that stands in
when not, an SVG of the product's initials on a colour taken from its sku, the same for the same
product every time, so browsers and caches may keep it."""

from __future__ import annotations

import hashlib
from html import escape

from gateway.web import STATIC_DIR

WIDTH, HEIGHT = 400, 300


def initials(name: str, fallback: str) -> str:
    """Up to two letters: the first of the first two words (``Brazil Coffee Beans`` -> ``BC``)."""
    words = [word for word in name.replace("-", " ").split() if word[:1].isalnum()]
    letters = "".join(word[0] for word in words[:2]).upper()
    return letters or fallback.replace("-", "")[:2].upper() or "?"


def colour(sku: str) -> str:
    """A hue from the sku's digest; saturation and lightness fixed so white text stays legible
    on every hue (a contrast of at least 4.5:1 at 32 % lightness)."""
    hue = int.from_bytes(hashlib.sha256(sku.encode()).digest()[:2], "big") % 360
    return f"hsl({hue}, 45%, 32%)"


def placeholder(sku: str, name: str) -> str:
    label = escape(name or sku)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{label}">'
        f"<title>{label}</title>"
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="{colour(sku)}"/>'
        f'<text x="50%" y="50%" dy=".35em" text-anchor="middle" fill="#fff" '
        f'font-family="system-ui, sans-serif" font-size="120" font-weight="600">'
        f"{escape(initials(name, sku))}</text></svg>"
    )


def etag(svg: str) -> str:
    return '"' + hashlib.sha256(svg.encode()).hexdigest()[:32] + '"'


def shown(image: str) -> bool:
    """Whether catalog's image can be shown as it is: one hosted elsewhere (http or https), or a
    file this gateway serves under /static. Any other path would be a broken image, so the
    generated placeholder stands in for it."""
    if image.startswith(("https://", "http://")):
        return True
    if not image.startswith("/static/") or ".." in image:
        return False
    return (STATIC_DIR / image.removeprefix("/static/")).is_file()
