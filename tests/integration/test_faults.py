"""Real faults: a disk that fills up while an artifact is written.

The disk is a real 40 MB tmpfs when this machine lets the test mount one (root in
a container usually may), otherwise the writing process runs under a real file
size limit (RLIMIT_FSIZE), so the kernel fails the write either way. The
writer is a separate process, as a pipeline step is. What must hold: the write
fails with an error that says so, the previous good artifact is byte for byte
what it was, and no temporary file is left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DISK_MB = 40


@pytest.fixture
def small_disk(tmp_path):
    """(folder, file-size limit for the writer or None): a 40 MB tmpfs if it mounts, else a plain folder."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    yield folder, None if mounted else DISK_MB * 1_000_000
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)


def run_writer(code: str, limit: int | None) -> subprocess.CompletedProcess:
    def limit_file_size() -> None:  # the kernel refuses writes past the limit (EFBIG), like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size if limit else None)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_checkpoint_write_on_a_full_disk_keeps_the_previous_one(small_disk):
    folder, limit = small_disk
    code = f"""
        import sys
        from fmn_core.engine import preset
        from fmn_core.engine.checkpoint import build_model, save_checkpoint
        config = preset("cpu", pretrained="none")
        classes = 5000 if sys.argv[-1] == "many" else 2  # 30 MB fits; 81 MB (two 5000-way classifiers) does not
        model = build_model(config, classes)
        try:
            save_checkpoint("{folder}/fmn.pt", model=model, config=config, stage=2, epoch=1, complete=True,
                            label_map={{i: i + 1 for i in range(classes)}})
        except OSError as exc:
            print("write failed:", exc)
            sys.exit(3)
    """
    first = run_writer(code, limit)
    assert first.returncode == 0, first.stderr
    before = md5(folder / "fmn.pt")
    second = run_writer(code.replace('sys.argv[-1] == "many"', "True"), limit)
    assert second.returncode == 3, second.stdout + second.stderr
    assert "No space left on device" in second.stdout or "File too large" in second.stdout
    assert md5(folder / "fmn.pt") == before
    assert sorted(p.name for p in folder.iterdir()) == ["fmn.pt"]  # no temporary file left

    from fmn_core.engine import load_checkpoint

    assert load_checkpoint(folder / "fmn.pt")["stage"] == 2


def test_descriptor_table_write_on_a_full_disk_keeps_the_previous_one(small_disk):
    folder, limit = small_disk
    code = f"""
        import sys
        import numpy as np, pandas as pd
        from fmn_core.retrieval import DescriptorTable
        rows = int(sys.argv[-1]) if sys.argv[-1].isdigit() else 100
        meta = pd.DataFrame({{"path": [f"/data/{{i}}.jpg" for i in range(rows)], "pid": 1, "camid": 0,
                             "split": "gallery"}})
        table = DescriptorTable(meta, {{"fmn": np.random.default_rng(0).random((rows, 2560), dtype=np.float32)}})
        try:
            table.save("{folder}/gallery_descriptors.parquet")
        except OSError as exc:
            print("write failed:", exc)
            sys.exit(3)
    """
    small = run_writer(code, limit)
    assert small.returncode == 0, small.stderr
    before = md5(folder / "gallery_descriptors.parquet")
    huge = run_writer(code.replace("else 100", "else 6000"), limit)  # 61 MB of descriptors
    assert huge.returncode == 3, huge.stdout + huge.stderr
    assert md5(folder / "gallery_descriptors.parquet") == before
    assert sorted(p.name for p in folder.iterdir()) == ["gallery_descriptors.parquet"]
    with contextlib.suppress(ImportError):
        from fmn_core.retrieval import DescriptorTable

        assert len(DescriptorTable.load(folder / "gallery_descriptors.parquet")) == 100
