"""The optional parts of tfcascade and the pip extras that install them."""

from __future__ import annotations

import importlib.util


def require_extra(package: str, extra: str, what: str) -> None:
    """Refuses ``what`` when ``package`` is not installed.

    Raises:
      ImportError: naming the missing package and the ``pip install 'tfcascade[extra]'`` that
        brings it.
    """
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"{what} needs {package}, which is not installed: "
                          f"pip install 'tfcascade[{extra}]'")
