"""The deploy layer: the image built and run with Docker, the graph across two hosts (network namespaces) with
Celery, Kubernetes manifests against the API server's schemas. Needs root for daemons and namespaces; each test
says why it skips where the machine lacks them, and FMN_REQUIRE_DEPLOY=1 (set by .ci/run) turns a skip into a
failure."""

from pathlib import Path

from tests.helpers import mark_layer


def pytest_collection_modifyitems(config, items) -> None:
    mark_layer(items, Path(__file__).parent, "deploy", 1500)
