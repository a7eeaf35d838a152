"""The model card as a web page: the Airflow UI's "Model card" tab on a training run."""

from __future__ import annotations

import html

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:60rem;line-height:1.45}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}"
    "td:first-child,th:first-child{text-align:left}code{background:#f4f4f4;padding:0 .2rem}"
)


def read_card(model_dir: str) -> str | None:
    """``model_card.md`` of an exported model (any object store), or ``None`` when there is none yet."""
    from airflow.sdk import ObjectStoragePath

    card = ObjectStoragePath(model_dir.rstrip("/") + "/model_card.md")
    return card.read_text() if card.exists() else None


def card_page(title: str, markdown: str | None, missing: str) -> str:
    """A standalone HTML page: the card rendered (tables included), or ``missing`` when there is none."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown) if markdown else ""
    body = body or f"<p>{html.escape(missing)}</p>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )
