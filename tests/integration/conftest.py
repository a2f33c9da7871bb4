"""The integration layer. Trains models, or drives the real Dagster CLI / daemon, DVC remotes, sshd or torchrun."""

from pathlib import Path

from tests.helpers import mark_layer


def pytest_collection_modifyitems(config, items) -> None:
    mark_layer(items, Path(__file__).parent, "integration", 900)
