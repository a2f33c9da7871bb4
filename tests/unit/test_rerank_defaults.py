"""One home for the re-ranking defaults: k1, k2 and lambda are numbers in fmn_core/retrieval/reranking.py only.

Every other default of them (a function's parameter, a pydantic ``Field``, a class attribute, the CLI's
``--k1 / --k2 / --lambda``) must name the constants. The scan reads the code with ``ast`` (nothing is imported),
passes on the project as it is, and is shown to fail on a copy of the tree with one second copy added, so a scan
that finds nothing cannot pass unnoticed.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmn_core.retrieval.reranking import K1, K2, LAMBDA_VALUE

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fmn_core", "fmn_assets", "bench")
NAMES = {"k1", "k2", "lambda_value"}
#: the command-line options of these names (fmn evaluate)
OPTIONS = {"--k1": "k1", "--k2": "k2", "--lambda": "lambda_value"}
#: pydantic's and the dataclasses' field constructors: their default is the first argument or ``default=``
FIELD_CALLS = {"Field", "field"}


def _is_number(node: ast.expr | None) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool)


def _call_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Call):
        return node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
    return None


def _field_default(value: ast.expr) -> ast.expr | None:
    """``Field(20, ge=1)`` / ``field(default=20)`` -> the 20; any other value is its own default."""
    if _call_name(value) not in FIELD_CALLS:
        return value
    assert isinstance(value, ast.Call)
    keyword = next((k.value for k in value.keywords if k.arg == "default"), None)
    return value.args[0] if value.args else keyword


def _defaults(node: ast.AST) -> Iterator[tuple[str, ast.expr | None]]:
    """(name, default expression) of every default that ``node`` declares."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        positional = [*node.args.posonlyargs, *node.args.args]
        yield from ((arg.arg, default) for arg, default in
                    zip(positional[len(positional) - len(node.args.defaults):], node.args.defaults, strict=True))
        yield from ((arg.arg, default) for arg, default in zip(node.args.kwonlyargs, node.args.kw_defaults,
                                                               strict=True) if default is not None)
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        yield node.target.id, _field_default(node.value)  # a dataclass / pydantic field: `k1: int = Field(20)`
    elif isinstance(node, ast.Assign) and _call_name(node.value) in FIELD_CALLS:
        yield from ((target.id, _field_default(node.value)) for target in node.targets if isinstance(target, ast.Name))
    elif _call_name(node) == "add_argument":
        assert isinstance(node, ast.Call)
        flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        dest = next((k.value.value for k in node.keywords if k.arg == "dest" and isinstance(k.value, ast.Constant)),
                    None)
        names = {OPTIONS[flag] for flag in flags if flag in OPTIONS} | ({dest} & NAMES)
        default = next((k.value for k in node.keywords if k.arg == "default"), None)
        yield from ((name, default) for name in names)


def second_copies(root: Path) -> list[str]:
    """``path:line: name = literal`` for every default of k1, k2 or lambda_value written as a number."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                found += [f"{path.relative_to(root)}:{value.lineno}: {name} = {ast.unparse(value)}"
                          for name, value in _defaults(node) if name in NAMES and _is_number(value)]
    return found


def test_the_published_settings_live_in_reranking_py() -> None:
    assert (K1, K2, LAMBDA_VALUE) == (20, 6, 0.3)  # Zhong et al. (CVPR 2017), the paper's section 3.5


def test_no_default_repeats_the_numbers() -> None:
    assert second_copies(ROOT) == []


SECOND_COPIES = {
    "function parameter": ("fmn_core/retrieval/results.py", "def again(table, k1: int = 20):\n    return table\n",
                           "k1 = 20"),
    "keyword-only parameter": ("bench/ablation.py", "def again(*, lambda_value=0.3):\n    return lambda_value\n",
                               "lambda_value = 0.3"),
    "pydantic Field": ("fmn_assets/configs.py", "class Again(StepConfig):\n    k2: int = Field(6, ge=1)\n",
                       "k2 = 6"),
    "argparse option": ("fmn_core/cli.py", "def again(parser):\n    parser.add_argument('--k1', type=int, "
                                           "default=20)\n", "k1 = 20"),
}


@pytest.mark.parametrize("kind", SECOND_COPIES)
def test_a_second_copy_is_found(tmp_path: Path, kind: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    relative, code, shown = SECOND_COPIES[kind]
    target = tmp_path / relative
    before = target.read_text(encoding="utf-8")
    target.write_text(before + "\n\n" + code, encoding="utf-8")
    line = before.count("\n") + 3  # the appended definition's first line
    if "Field" in code or "add_argument" in code:
        line += 1
    assert second_copies(tmp_path) == [f"{relative}:{line}: {shown}"]
