"""The browser layer. Headless chromium against `dagster dev` (also counted as integration)."""

from pathlib import Path

from tests.helpers import mark_layer


def pytest_collection_modifyitems(config, items) -> None:
    mark_layer(items, Path(__file__).parent, "browser", 900, "integration")
