"""generate_synthetic(workers=2) from a script without `if __name__ == "__main__":` is one clear error, not a
BrokenProcessPool under a screen of worker tracebacks; the guarded script still renders in worker processes.

Real scripts run in a subprocess, as a user runs them (the workers are "spawn" processes that run the script
again); the worker-side stop is checked in-process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fmn_core.data.synthetic import METADATA_NAME, generate_synthetic
from fmn_core.utils.main_guard import STOPPED_WORKER_STATUS
from tests.helpers import REPO

ADVICE = ("outside `if __name__ == \"__main__\":`; its worker processes start by running that script again, so each "
          "would call it once more. Put the call under `if __name__ == \"__main__\":`, or pass workers=1")


def _script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "make_data.py"
    script.write_text(textwrap.dedent(body).format(out=str(tmp_path / "data")))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


UNGUARDED = {
    "at the top level": ("""\
        from fmn_core.data.synthetic import generate_synthetic

        generate_synthetic({out!r}, "tiny", workers=2)
        """, 3),
    "through a function called at the top level": ("""\
        from fmn_core.data.synthetic import generate_synthetic


        def make():
            return generate_synthetic({out!r}, "tiny", workers=2)


        summary = make()
        if __name__ == "__main__":
            print(summary)
        """, 8),
}


@pytest.mark.parametrize("case", UNGUARDED)
def test_an_unguarded_script_gets_one_message_and_no_worker_tracebacks(tmp_path, case):
    body, line = UNGUARDED[case]
    done = _script(tmp_path, body)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert output.count(f"generate_synthetic(workers=2) was called from the top level of {tmp_path / 'make_data.py'} "
                        f"(line {line}), {ADVICE}") == 1, output
    assert output.count("Traceback") == 1, output  # the script's own uncaught error, no worker's
    assert "BrokenProcessPool" not in output and "bootstrapping phase" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["make_data.py"]  # no dataset, no hidden temporary folder


def test_the_guarded_script_renders_in_worker_processes(tmp_path):
    done = _script(tmp_path, """\
        from fmn_core.data.synthetic import generate_synthetic

        if __name__ == "__main__":
            print(generate_synthetic({out!r}, "tiny", workers=2).workers)
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    assert json.loads((tmp_path / "data" / METADATA_NAME).read_text())["complete"] is True


def test_a_worker_re_running_an_unguarded_script_stops_quietly_before_writing(tmp_path, monkeypatch):
    """The worker-side stop, for a script the caller could not check: as a spawn worker sees it at start-up."""
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(SystemExit) as stopped:
        generate_synthetic(tmp_path / "data", "tiny", workers=2)
    assert stopped.value.code == STOPPED_WORKER_STATUS
    assert not any(tmp_path.iterdir())
