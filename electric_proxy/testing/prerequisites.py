"""What a test does when a real prerequisite (a server, a browser) is missing."""

from __future__ import annotations

import os
from typing import NoReturn

__all__ = ["unavailable"]


def unavailable(reason: str) -> NoReturn:
    """A test's real prerequisite (a server, a browser) is missing: fail under CI, else skip.

    CI installs every prerequisite, so there a missing one is a broken set-up, never a pass.
    """
    import pytest  # here: the kit's other helpers work without pytest imported

    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
