"""Code versions of the assets: a hash of the fmn_core sources and the default recipe each one runs.

Dagster compares an asset's ``code_version`` with the one its last materialization
recorded, so editing the network, the trainer or the extraction code marks the
assets built by the old code as stale in the UI ("code version changed"), as a
changed upstream data version does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from fmn_core.engine.recipes import preset


def source_digest(*modules: str) -> str:
    """sha256 over the source files of modules and packages (every ``*.py`` below a package), in name order."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        origin = Path(importlib.util.find_spec(name).origin)  # found, not imported: matplotlib and the like stay out
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for file in files:
            digest.update(f"{name}:{file.name}\n".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def code_version(*modules: str, recipe: str | None = None) -> str:
    """A short version from the sources and, for training, the preset recipe's default values."""
    digest = hashlib.sha256(source_digest(*modules).encode())
    if recipe is not None:
        digest.update(json.dumps(preset(recipe).to_dict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


#: What each stage's result depends on besides its inputs and its run config.
TRAINING_CODE = code_version("fmn_core.models", "fmn_core.engine", "fmn_core.losses", "fmn_core.data.loading",
                             recipe="cpu")
DESCRIPTOR_CODE = code_version("fmn_core.models", "fmn_core.engine.checkpoint", "fmn_core.data.loading",
                               "fmn_core.retrieval.descriptors")
EVALUATION_CODE = code_version("fmn_core.retrieval", "fmn_core.viz")
EXPORT_CODE = code_version("fmn_core.models", "fmn_core.engine.checkpoint", "fmn_core.export.onnx_export",
                           "fmn_core.retrieval.onnx_format", "fmn_core.retrieval.extractor")
MODEL_CARD_CODE = code_version("fmn_core.export.model_card")
DEPLOYMENT_CODE = code_version("fmn_assets.promotion", "fmn_core.retrieval")
