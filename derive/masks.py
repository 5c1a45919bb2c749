"""Attention masks: which keys s a query at position t sees. Pure Python (no SymPy), one place for every view.

- ``None`` (full attention): every row sees all T keys — the paper's encoder.
- ``"causal"``: row t sees the keys s <= t, n_t = t + 1 of them, exactly as
  ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``.
- ``"sliding:W"``: a causal window of W keys, t - W < s <= t, n_t = min(t + 1, W).

Positions run t = 0 .. T-1. With a mask the tokens are no longer exchangeable:
early rows are short (row 0 attends to itself only), so a theory of a causal
stack is position-resolved (docs/design.md, "Masks").
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("causal", "sliding:W")


@dataclass(frozen=True)
class Mask:
    """A causal mask with an optional window: ``window=None`` is plain causal attention."""

    window: int | None = None

    def __post_init__(self):
        if self.window is not None and (isinstance(self.window, bool) or not isinstance(self.window, int)
                                        or self.window < 1):
            raise ValueError(f"mask window W must be an integer >= 1, got {self.window!r}")

    def first_key(self, t: int) -> int:
        """The first key row t sees."""
        return 0 if self.window is None else max(0, t - self.window + 1)

    def n_keys(self, T: int) -> list[int]:
        """n_t, the number of keys of each row t = 0 .. T-1."""
        return [t + 1 - self.first_key(t) for t in range(T)]

    def key_counts(self, t: int, u: int) -> tuple[int, int, int]:
        """(keys rows t and u both see, keys only t sees, keys only u sees)."""
        n_t, n_u = t + 1 - self.first_key(t), u + 1 - self.first_key(u)
        shared = max(0, min(t, u) + 1 - max(self.first_key(t), self.first_key(u)))
        return shared, n_t - shared, n_u - shared

    def allowed(self, T: int):
        """The boolean (T, T) NumPy matrix of allowed (t, s) pairs (NumPy imported on use)."""
        import numpy as np
        t, s = np.arange(T)[:, None], np.arange(T)[None, :]
        ok = s <= t
        return ok if self.window is None else ok & (s > t - self.window)

    def __str__(self):
        return "causal" if self.window is None else f"sliding:{self.window}"


def parse(mask) -> Mask | None:
    """``None``, "causal", "sliding:W" (W an integer >= 1) or a :class:`Mask`; ValueError naming ``mask`` else."""
    if mask is None or isinstance(mask, Mask):
        return mask
    if mask == "causal":
        return Mask()
    if isinstance(mask, str) and mask.startswith("sliding:"):
        text = mask[len("sliding:"):]
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"mask 'sliding:W' needs a window W, an integer >= 1, got {mask!r}")
        return Mask(int(text))
    raise ValueError(f"mask must be None (full attention), 'causal' or 'sliding:W' (W an integer >= 1), got {mask!r}")
