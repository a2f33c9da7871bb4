"""One base for bad input: every fmn_core error class derives from it, and fmn_assets maps it in one place."""

import ast
from pathlib import Path

import dagster as dg
import pytest

from fmn_assets.failures import bad_input_fails_the_step
from fmn_core import FMNInputError
from fmn_core.data import DatasetError, DatasetLayoutError
from fmn_core.data.synthetic import SyntheticRootError
from fmn_core.engine import CheckpointError, TrainingDivergedError
from fmn_core.export.onnx_export import ExportError, ExportParityError
from fmn_core.models import WeightsUnavailableError
from fmn_core.retrieval.extractor import ImageReadError
from fmn_core.retrieval.search import GalleryError

CORE = Path(__file__).resolve().parents[2] / "fmn_core"


def test_every_error_class_of_fmn_core_derives_from_the_one_base():
    for error in (DatasetError, DatasetLayoutError, SyntheticRootError, CheckpointError, TrainingDivergedError,
                  ExportError, ExportParityError, WeightsUnavailableError, ImageReadError, GalleryError):
        assert issubclass(error, FMNInputError), error
    assert issubclass(FMNInputError, ValueError)  # callers that catch ValueError keep working
    assert issubclass(WeightsUnavailableError, FileNotFoundError) and issubclass(DatasetLayoutError, FileNotFoundError)


def test_no_module_of_fmn_core_raises_a_bare_builtin_error_for_bad_input():
    """A new check that raises ValueError or FileNotFoundError would be retried by the orchestrator: fail here."""
    bare = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name) \
                    and node.exc.func.id in ("ValueError", "FileNotFoundError"):
                bare.append(f"{path.relative_to(CORE.parent)}:{node.lineno}")
    assert bare == []


def test_bad_input_becomes_a_failure_that_is_not_retried_and_other_errors_pass_through():
    with pytest.raises(dg.Failure) as failure, bad_input_fails_the_step("training on 'x' failed", "Train again."):
        raise CheckpointError("grn.pt is truncated")
    assert failure.value.allow_retries is False
    assert failure.value.description == "training on 'x' failed: grn.pt is truncated Train again."
    with pytest.raises(OSError, match="disk"), bad_input_fails_the_step("training"):  # worth a retry: not mapped
        raise OSError("disk full")
