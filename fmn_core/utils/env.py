"""On/off environment variables of fmn_core, read one way: a value that is neither is refused, not taken as off.

A typo must not flip a switch: ``FMN_OFFLINE=maybe`` is not "online" and ``FMN_DEBUG=0`` is not "debug"; both are
refused, naming the variable and the values it takes.
"""

from __future__ import annotations

import os

from fmn_core.utils.errors import FMNInputError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")
#: forbids downloads of pretrained weights: for air-gapped machines and test runs
OFFLINE = "FMN_OFFLINE"
#: the CLI shows the traceback of an unexpected error
DEBUG = "FMN_DEBUG"
FLAG_VARIABLES = (OFFLINE, DEBUG)


def flag(name: str) -> bool:
    """Whether the on/off variable ``name`` is on; unset or empty is off; anything but the words below is refused."""
    raw = os.environ.get(name, "")
    text = raw.strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise FMNInputError(f"{name}={raw!r}: expected one of {', '.join(TRUE_WORDS)} (on) or "
                        f"{', '.join(w for w in FALSE_WORDS if w)} or empty (off)")
