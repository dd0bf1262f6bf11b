"""Split item lists into pages and build page-number windows for navigation."""

from __future__ import annotations

DEFAULT_PER_PAGE = 10
WINDOW_RADIUS = 2


def page_count(total: int, per_page: int = DEFAULT_PER_PAGE) -> int:
    """Return how many pages total items need (at least one page)."""
    if per_page < 1:
        raise ValueError("per_page must be positive")
    if total < 0:
        raise ValueError("total must not be negative")
    return max(1, -(-total // per_page))


def page_items(items: list, page: int, per_page: int = DEFAULT_PER_PAGE) -> list:
    """Return the items on a 1-based page; pages past the end are empty."""
    if page < 1:
        raise ValueError("pages start at 1")
    start = (page - 1) * per_page
    return items[start : start + per_page]


def page_window(current: int, pages: int, radius: int = WINDOW_RADIUS) -> list[int]:
    """Return the page numbers within radius of current, clipped to 1..pages."""
    if not 1 <= current <= pages:
        raise ValueError(f"page {current} is outside 1..{pages}")
    first = max(1, current - radius)
    last = min(pages, current + radius)
    return list(range(first, last + 1))


def page_label(page: int, pages: int) -> str:
    """Return a label such as 'Page 2 of 7'."""
    return f"Page {page} of {pages}"


def page_of_item(index: int, per_page: int = DEFAULT_PER_PAGE) -> int:
    """Return the 1-based page that holds the item at a 0-based index."""
    if index < 0:
        raise ValueError("index must not be negative")
    return index // per_page + 1


def has_next(page: int, pages: int) -> bool:
    """Return True if there is a page after this one."""
    return page < pages


def parse_page(text: str, pages: int) -> int:
    """Read a page number from user input, falling back to 1 and clamping to 1..pages."""
    try:
        requested = int(text.strip())
    except ValueError:
        return 1
    return min(max(requested, 1), pages)
