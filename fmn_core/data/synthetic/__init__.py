"""A synthetic person re-identification dataset, written in the Market-1501 layout.

No real re-ID dataset can be downloaded here, so the demo and the tests use this
generator. It writes ``bounding_box_train/``, ``query/`` and
``bounding_box_test/`` with Market-1501 file names (``PPPP_cCsS_FFFFFF_BB.jpg``),
so the project's real Market-1501 reader reads it unchanged, plus a
``synthetic.json`` that records the configuration, every identity's attributes
and every image's rendering conditions.

The data is built to make the Feature Mask Network paper's point testable:
a global descriptor should not be enough.

* **Global appearance** (what a global branch sees): upper clothing colour,
  lower clothing colour and type (trousers, shorts, skirt), sleeve length, body
  height and build, skin tone, hair colour and length.
* **Local details** (what the mask-guided local branch must attend to): bag
  (backpack, handbag or shoulder bag; colour; which side it is carried on),
  shoe colour, chest logo (shape and colour), hat, belt, stripes on the sleeves.
* **Groups**: identities come in groups of ``group_size`` that share the global
  appearance *exactly* and differ only in local details (any two group mates
  differ in at least two local details). A purely global descriptor confuses
  group mates. Every group lies wholly in one split, and groups alternate
  between train and test, so training teaches that local details matter and
  the test gallery holds the confusers of every query.
* **Cameras** (per-camera profile, shuffled and jittered per seed): RGB gains,
  brightness and contrast (illumination and colour cast), person scale within
  the crop, the usual viewpoint (front, back or side: a chest logo is visible
  from the front only, a handbag shows on the side it is carried and swaps sides
  from the back, a backpack shows as straps from the front and as a box from the
  back or side, the side view is narrower), background (wall and ground colours
  and texture, plus random clutter shapes per image), blur and noise. Each
  identity passes each of its cameras in one direction, so most of its images
  there share one view (as in a tracklet) and a few show others.
* **Per image**: pose (leg stride, arm swing), scale and position jitter,
  brightness and colour jitter, sensor noise, JPEG quality; with
  ``occlusion_prob`` an occluder (pole, car, box, passer-by) covers part of the
  body, and with ``misalignment_prob`` the detector box is wrong (loose box with
  excess background, shifted or cut-off body, zoomed in). Query images are
  never misaligned, as Market-1501 queries are hand-drawn boxes.

Split and naming follow Market-1501: identities are split into disjoint halves
(train gets ``ceil(n / 2)``, test ``floor(n / 2)``); each test identity has one
query image per camera it appears in (at least two cameras, each with at least
two images, so every query has a gallery match under another camera); the
gallery holds the rest plus distractors (pid ``0000``: background-only or
partial-person crops) and junk boxes (pid ``-1``: mostly background or badly
misaligned crops).

Every image is drawn from its own random stream, derived from
``(seed, kind, pid, image index)``, so output is byte-identical whatever the
order or the number of worker processes. Generation goes to a temporary sibling
folder that is renamed into place at the end (see
:func:`fmn_core.utils.atomic.atomic_directory`).

The package follows the generator's stages: ``config`` (what a dataset is made of,
the presets), ``palettes`` (appearance sampling), ``cameras``, ``drawing``
(primitives), ``people``, ``plan`` (identities and one job per image),
``rendering`` and ``dataset`` (the folder, reuse and the atomic write).
"""

from fmn_core.data.synthetic.cameras import camera_profiles
from fmn_core.data.synthetic.config import (
    BODY_LAYOUT,
    GENERATOR_VERSION,
    METADATA_NAME,
    SPLIT_FOLDERS,
    SYNTHETIC_PRESETS,
    VIEWS,
    SyntheticConfig,
    resolve_config,
)
from fmn_core.data.synthetic.dataset import SyntheticRootError, SyntheticSummary, generate_synthetic, read_metadata
from fmn_core.data.synthetic.palettes import local_difference
from fmn_core.data.synthetic.plan import plan_dataset
from fmn_core.data.synthetic.rendering import IMAGE_COLUMNS

__all__ = [
    "BODY_LAYOUT",
    "GENERATOR_VERSION",
    "IMAGE_COLUMNS",
    "METADATA_NAME",
    "SPLIT_FOLDERS",
    "SYNTHETIC_PRESETS",
    "VIEWS",
    "SyntheticConfig",
    "SyntheticRootError",
    "SyntheticSummary",
    "camera_profiles",
    "generate_synthetic",
    "local_difference",
    "plan_dataset",
    "read_metadata",
    "resolve_config",
]
