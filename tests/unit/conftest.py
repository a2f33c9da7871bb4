"""The unit layer. In-process and fast: `python3 run.py test -m unit` is the quick loop."""

from pathlib import Path

from tests.helpers import mark_layer


def pytest_collection_modifyitems(config, items) -> None:
    mark_layer(items, Path(__file__).parent, "unit")
