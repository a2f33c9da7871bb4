"""Worker processes started with "spawn" run the caller's script again: one clear error when it has no guard.

Every "spawn" worker is a fresh interpreter that first runs the caller's main script again (as ``__mp_main__``)
to find its functions. A script that starts the workers from its top level, outside
``if __name__ == "__main__":``, makes each worker try to start workers of its own while it is still starting up:
multiprocessing refuses that in every worker with a traceback, and the caller gets a ``BrokenProcessPool``.
:func:`refuse_unguarded_main` finds that case in the caller before any worker starts and says what to do, once;
:func:`stop_if_rerun_by_a_worker` lets a worker that re-runs such a script anyway end quietly.
"""

from __future__ import annotations

import ast
import inspect
import multiprocessing
import sys
from pathlib import Path
from types import FrameType

from fmn_core.utils.errors import FMNInputError

#: a worker that stops while re-running an unguarded script exits with this status (its caller sees the pool break)
STOPPED_WORKER_STATUS = 3


class UnguardedMainError(FMNInputError):
    """The calling script would be run again by every worker process: it needs the ``__main__`` guard."""


def _is_main_guard(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, *test.comparators]
    return (any(isinstance(side, ast.Name) and side.id == "__name__" for side in sides)
            and any(isinstance(side, ast.Constant) and side.value == "__main__" for side in sides))


def _main_module_frame() -> FrameType | None:
    """The frame of the main script's top-level code, when it is still running (it called us); else None."""
    main = sys.modules.get("__main__")
    frame = inspect.currentframe()
    while frame is not None:
        if main is not None and frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            return frame
        frame = frame.f_back
    return None


def unguarded_main_line() -> tuple[Path, int] | None:
    """(script, line) when the main script's top level is running now outside ``if __name__ == "__main__":``, so
    that spawned workers would run the same line again; None otherwise (a guarded call, a call after the script's
    top level ended, ``python -c``, a notebook, a script whose source cannot be read)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    frame = _main_module_frame()
    if not path or frame is None:
        return None
    try:
        tree = ast.parse(Path(path).read_bytes(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    line = frame.f_lineno
    guarded = any(isinstance(node, ast.If) and _is_main_guard(node.test) and node.body
                  and node.body[0].lineno <= line <= (node.body[-1].end_lineno or node.body[-1].lineno)
                  for node in ast.walk(tree))
    return None if guarded else (Path(path), line)


def refuse_unguarded_main(what: str) -> None:
    """Raise :class:`UnguardedMainError` when ``what`` (the call about to start spawn workers) comes from the
    main script's top level without the ``__main__`` guard."""
    found = unguarded_main_line()
    if found is not None:
        script, line = found
        raise UnguardedMainError(
            f"{what} was called from the top level of {script} (line {line}), outside "
            "`if __name__ == \"__main__\":`; its worker processes start by running that script again, so each "
            "would call it once more. Put the call under `if __name__ == \"__main__\":`, or pass workers=1")


def stop_if_rerun_by_a_worker() -> None:
    """End this process quietly when it is a spawn worker running the caller's script again at start-up.

    Only an unguarded script calls a library function at that point; the caller's :func:`refuse_unguarded_main`
    normally stops it before any worker starts, and this keeps every worker from printing a traceback when it
    could not (the script's source unreadable, a guard it did not recognise). ``_inheriting`` is the flag
    multiprocessing itself checks to refuse new processes while a worker starts up.
    """
    if multiprocessing.parent_process() is not None and getattr(multiprocessing.current_process(), "_inheriting",
                                                                False):
        raise SystemExit(STOPPED_WORKER_STATUS)
