"""ImageNet weights for the ResNets: hub cache, download from a real local HTTP server, the FMN_OFFLINE switch."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fmn_core.models import WeightsUnavailableError
from fmn_core.models.backbone import build_resnet, fetch_imagenet_weights, imagenet_weights_file

ALTERNATIVES = ("pretrained='none'", "efficientnet_lite0", "local ResNet state dict (.pth)", "put the file there")


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME, so nothing from the real cache leaks in and nothing is written to it."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert Path(torch.hub.get_dir()) == home / "hub"  # get_dir reads TORCH_HOME at call time
    return home


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo conftest's FMN_OFFLINE and keep any proxy away from the local server."""
    monkeypatch.delenv("FMN_OFFLINE", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Make every connection attempt (and name lookup) fail, and record it."""
    calls: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise OSError("network use in a test that must stay offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return calls


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving a temporary directory: (directory, base URL)."""
    root = tmp_path / "served"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def resnet18_file(directory: Path, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """A real ResNet-18 state dict named as torchvision names it: resnet18-<first 8 hex of its SHA-256>.pth."""
    torch.manual_seed(seed)
    state = build_resnet("resnet18").state_dict()
    staging = directory / "staging.pth"
    torch.save(state, staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    return staging.rename(directory / f"resnet18-{digest[:8]}.pth"), state


def no_partial_files(home: Path) -> bool:
    return not any(path.name.endswith(".partial") for path in home.rglob("*"))


@pytest.mark.timeout(60)
def test_offline_switch_never_opens_a_socket(empty_torch_home, no_network, monkeypatch):
    monkeypatch.setenv("FMN_OFFLINE", "On")
    file, url = imagenet_weights_file("resnet18")
    with pytest.raises(WeightsUnavailableError) as info:
        build_resnet("resnet18", "imagenet")
    message = str(info.value)
    assert str(file) in message and url in message and "FMN_OFFLINE" in message
    assert all(alternative in message for alternative in ALTERNATIVES)
    assert no_network == []
    assert not file.exists()


@pytest.mark.timeout(60)
def test_cached_file_is_used_without_network(empty_torch_home, no_network, tmp_path):
    file, _ = imagenet_weights_file("resnet18")
    file.parent.mkdir(parents=True)
    source, state = resnet18_file(tmp_path)
    source.rename(file)
    model = build_resnet("resnet18", "imagenet")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert no_network == []


@pytest.mark.timeout(60)
def test_missing_file_is_downloaded_into_the_hub_cache(empty_torch_home, online, http_root, monkeypatch):
    root, base = http_root
    served, state = resnet18_file(root, seed=1)
    file = fetch_imagenet_weights("resnet18", url=f"{base}/{served.name}")
    assert file == Path(torch.hub.get_dir()) / "checkpoints" / served.name
    assert file.read_bytes() == served.read_bytes()
    assert no_partial_files(empty_torch_home)
    model = build_resnet("resnet18", str(file))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())

    # a second call finds the file in the cache and does not go to the network
    calls: list[object] = []
    monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: calls.append(args))
    assert fetch_imagenet_weights("resnet18", url=f"{base}/{served.name}") == file
    assert calls == []


@pytest.mark.timeout(60)
def test_download_with_wrong_hash_leaves_nothing(empty_torch_home, online, http_root):
    root, base = http_root
    payload = b"these bytes are not the weights the file name promises"
    actual = hashlib.sha256(payload).hexdigest()[:8]
    wrong = ("1" if actual[0] == "0" else "0") + actual[1:]
    (root / f"resnet18-{wrong}.pth").write_bytes(payload)
    url = f"{base}/resnet18-{wrong}.pth"
    with pytest.raises(WeightsUnavailableError) as info:
        fetch_imagenet_weights("resnet18", url=url)
    message = str(info.value)
    assert url in message and "hash" in message
    assert not (Path(torch.hub.get_dir()) / "checkpoints" / f"resnet18-{wrong}.pth").exists()
    assert not empty_torch_home.exists()  # the cache is as it was: not even its directories were left behind


@pytest.mark.timeout(60)
def test_unreachable_server_names_url_and_alternatives(empty_torch_home, online):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/resnet18-f37072fd.pth"
    with pytest.raises(WeightsUnavailableError) as info:
        fetch_imagenet_weights("resnet18", url=url)
    message = str(info.value)
    destination = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    assert url in message and str(destination) in message
    assert all(alternative in message for alternative in ALTERNATIVES)
    assert not destination.exists() and not empty_torch_home.exists()
