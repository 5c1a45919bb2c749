"""One progress bar for long computations: tqdm on stderr, shown only after 2 s, a no-op without tqdm."""

from __future__ import annotations

import sys


class progress:
    """``with progress(total, desc) as update``: ``update(n)`` advances the bar (None when tqdm is missing)."""

    def __init__(self, total, desc, unit="pt"):
        self.total, self.desc, self.unit, self.bar = total, desc, unit, None

    def __enter__(self):
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        self.bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, delay=2.0, file=sys.stderr)
        return self.bar.update

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
