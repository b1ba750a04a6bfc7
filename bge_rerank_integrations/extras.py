"""Optional dependencies: a missing one fails with an ``ImportError`` that names the extra to install."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def needs_extra(extra: str, module: str) -> Iterator[None]:
    """Turn an ``ImportError`` raised inside into one that says which extra ``module`` needs.

    >>> with needs_extra("langchain", "bge_rerank_integrations.langchain"):
    ...     import langchain_core  # doctest: +SKIP
    """
    try:
        yield
    except ImportError as error:
        raise ImportError(
            f'{module} needs the {extra!r} extra ({error}): pip install "bge-rerank-integrations[{extra}]" '
            f'(from a clone: pip install ".[{extra}]"; see the README\'s Install section).'
        ) from error
