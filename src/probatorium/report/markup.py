"""HTML building blocks shared by the views: escaped tables, badges, key/value lists."""

from __future__ import annotations

from html import escape
from typing import Any, Iterable, Sequence

STATUS_CLASS = {
    "ok": "ok", "passed": "ok", "failed": "bad", "not_run": "na", "not_judged": "na",
    "not_applicable": "na", "invalid": "bad", "errored": "warn", "HIGH": "bad", "MED": "warn", "LOW": "low",
}


def e(v: Any) -> str:
    """Escaped text of any value (None is empty)."""
    return "" if v is None else escape(str(v))


def badge(text: str, kind: str | None = None) -> str:
    """A coloured status chip."""
    return f'<span class="badge {STATUS_CLASS.get(kind or text, "na")}">{e(text)}</span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "", raw: bool = False) -> str:
    """A table; cells are escaped unless ``raw`` (then they are trusted HTML built here)."""
    body = "".join("<tr>" + "".join(f"<td>{c if raw else e(c)}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return '<p class="muted">none</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv(pairs: Iterable[tuple[str, Any]]) -> str:
    """A definition list of label → value."""
    return '<dl class="kv">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in pairs) + "</dl>"


def flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested tallies as ``a.b = v`` rows (lists are shown by their length)."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(flatten(v, key + "."))
        elif isinstance(v, list):
            out.append((key, f"[{len(v)} items]"))
        else:
            out.append((key, v))
    return out


def details(summary: str, body: str, open_: bool = False) -> str:
    """A collapsible block."""
    return f'<details{" open" if open_ else ""}><summary>{summary}</summary>{body}</details>'
