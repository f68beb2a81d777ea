"""SVG badges in the flat shields.io look: a grey label box and a coloured message box.

Pure functions (text in, SVG text out). The width of each box is estimated from
per-character advance widths of Verdana at 11 px, the font badges are drawn in,
so a badge fits its text without measuring anything at run time.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

#: The colour of a tier badge's message by the run's status (shields' brightgreen, red, lightgrey).
STATUS_COLOURS = {"passed": "#4c1", "failed": "#e05d44", "not_judged": "#9f9f9f"}
#: A bench badge that measured cleanly is informational, not a verdict: shields' blue.
BENCH_COLOUR = "#007ec6"
LABEL_COLOUR = "#555"

# Approximate advance widths (px) of Verdana 11 px; anything else counts as an average letter.
_NARROW = {"i": 3.1, "l": 3.1, "j": 3.4, "I": 4.3, "f": 3.9, "t": 4.3, "r": 4.7, " ": 3.9, ".": 3.9,
           ",": 3.9, ":": 4.5, ";": 4.5, "!": 4.5, "|": 4.5, "'": 3.0, "(": 4.5, ")": 4.5, "-": 4.5}
_WIDE = {"m": 10.7, "w": 8.9, "M": 9.9, "W": 10.9, "%": 11.8, "@": 11.0}
_DIGIT = 7.0
_LOWER = 6.6
_UPPER = 7.6
_PAD = 10  # 5 px each side of a box's text


def text_width(text: str) -> float:
    """Estimated width in px of ``text`` set in Verdana 11 px."""
    total = 0.0
    for ch in text:
        if ch in _NARROW:
            total += _NARROW[ch]
        elif ch in _WIDE:
            total += _WIDE[ch]
        elif ch.isdigit():
            total += _DIGIT
        elif ch.isupper():
            total += _UPPER
        else:
            total += _LOWER
    return total


def badge_svg(label: str, message: str, colour: str) -> str:
    """A complete standalone SVG document: ``label`` on grey, ``message`` on ``colour``."""
    lw = round(text_width(label) + _PAD)
    mw = round(text_width(message) + _PAD)
    width = lw + mw
    lab, msg = escape(label), escape(message)
    aria = escape(f"{label}: {message}", {'"': "&quot;"})
    # text is drawn at 10x and scaled down, as shields does, for crisp sub-pixel placement
    lx, mx = lw * 5, (lw + mw / 2) * 10
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="{aria}">'
        f"<title>{lab}: {msg}</title>"
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="{LABEL_COLOUR}"/>'
        f'<rect x="{lw}" width="{mw}" height="20" fill="{colour}"/>'
        f'<rect width="{width}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
        'text-rendering="geometricPrecision" font-size="110">'
        f'<text x="{lx:g}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{lab}</text>'
        f'<text x="{lx:g}" y="140" transform="scale(.1)">{lab}</text>'
        f'<text x="{mx:g}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{msg}</text>'
        f'<text x="{mx:g}" y="140" transform="scale(.1)">{msg}</text>'
        "</g></svg>\n"
    )


def status_message(status: str) -> str:
    """The message a tier badge shows for a status: ``passed``, ``failed``, ``not judged``."""
    return status.replace("_", " ")
