"""Seeds: every command prints the seed it ran with, so any run can be replayed."""

from __future__ import annotations

import random
from typing import Optional


def pick_seed(seed: Optional[int] = None) -> int:
    """``seed`` if given, else a fresh one from the OS (to be printed and replayed)."""
    return seed if seed is not None else random.SystemRandom().randrange(2**31)
