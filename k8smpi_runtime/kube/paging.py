"""Paginated lists (``limit`` + ``continue``), for any client that can GET a JSON path."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    JSON = dict[str, Any]


def list_all(
    get: Callable[[str, Mapping[str, str | int | bool]], JSON],
    path: str,
    params: Mapping[str, str | int | bool] | None,
    limit: int,
) -> tuple[list[JSON], str]:
    """Every item of a collection, page by page, and the list's resourceVersion (to watch from)."""
    items: list[JSON] = []
    query: dict[str, str | int | bool] = dict(params or {})
    query["limit"] = limit
    while True:
        page = get(path, query)
        items.extend(page.get("items") or [])
        meta = page.get("metadata") or {}
        if not meta.get("continue"):
            return items, str(meta.get("resourceVersion", ""))
        query["continue"] = meta["continue"]
