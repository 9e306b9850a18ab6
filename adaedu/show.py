"""Show the source of any adaedu object in a notebook: the code that runs, not a copy of it."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent


def source_of(obj: Any) -> tuple[str, str]:
    """``(header, source)`` of a function, class, method or module defined in adaedu."""
    obj = inspect.unwrap(obj)  # the function under a decorator such as @contextmanager
    try:
        lines, start = inspect.getsourcelines(obj)
        path = Path(inspect.getsourcefile(obj) or "").resolve()
    except (TypeError, OSError) as exc:
        raise TypeError(
            f"obj={obj!r}: no source available (expected an adaedu function, class or module)"
        ) from exc
    try:
        where = path.relative_to(PACKAGE_ROOT.parent).as_posix()
    except ValueError:
        raise TypeError(
            f"obj={obj!r} is defined outside adaedu ({path}); show() displays adaedu code only"
        ) from None
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", "module"))
    end = start + len(lines) - 1
    header = f"`{name}` from `{where}`, lines {max(start, 1)}-{end}"
    return header, "".join(lines)


def show(obj: Any) -> Any:
    """Display ``obj``'s source, syntax-highlighted, with the file and lines it comes from.

    Rendered as Markdown, so that JupyterLab, Colab and GitHub all highlight it; outside a
    notebook the source is printed.
    """
    header, src = source_of(obj)
    text = f"{header}\n\n```python\n{src.rstrip()}\n```"
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(text))
            return None
    except ImportError:
        pass
    print(text)
    return None
