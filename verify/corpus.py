"""Real text offline, as bytes: the corpus of :mod:`verify.training` and its baselines.

No data set is downloaded: the default corpus is the Python standard library's
own source (every ``.py`` file under ``sysconfig.get_paths()["stdlib"]``, test
directories and site-packages left out), which every installation of Python
has. It is code, not prose, but it is real, varied, human-written text with
long-range structure (indentation, matching names, docstrings), and byte-level
modelling needs no tokenizer. A user passes any UTF-8 or binary text file
instead with ``text=PATH``.

- **Split by file** (stdlib): a file goes to the held-out set when the CRC-32
  of its relative path is divisible by 10 (about 10 % of the files), so no
  held-out byte shares a file with a training byte and the split does not
  depend on the order in which the file system lists files. A user's single
  file is split by position: its last ``heldout_fraction`` is held out.
- **Vocabulary**: the 256 byte values and one mask id (:data:`MASK`), the
  ``[MASK]`` of masked-language modelling.
- **Baselines** on the held-out bytes, with the training bytes' statistics
  (add-one smoothing): :meth:`Corpus.unigram_nats` (the byte frequencies: a
  model whose tokens have all collapsed onto one vector can do no better),
  :meth:`Corpus.context_free_nats` (the best masked-language model that sees
  its own input byte but no context: BERT's rule lets some predicted bytes
  through, so this lies below the unigram loss) and :meth:`Corpus.bigram_nats`
  (the previous byte as context: what reading one neighbour is worth).
"""

from __future__ import annotations

import sysconfig
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Byte values 0..255 are the tokens; MASK is the masked-language-modelling mask id.
BYTES = 256
MASK = BYTES
VOCAB = BYTES + 1
#: Directories of the standard library that are not part of the corpus (tests repeat themselves; site-packages
#: differs between installations).
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
HELDOUT_MODULUS = 10


@dataclass(frozen=True)
class Corpus:
    """Training and held-out bytes (uint8 arrays) and where they came from."""

    train: np.ndarray
    heldout: np.ndarray
    source: str

    def __post_init__(self):
        for name in ("train", "heldout"):
            arr = getattr(self, name)
            if arr.dtype != np.uint8 or arr.ndim != 1:
                raise ValueError(f"{name} must be a 1-D uint8 array of bytes")

    def check_length(self, seq_len: int, name: str = "text") -> None:
        """Both splits hold at least one sequence of ``seq_len`` bytes, else ValueError naming ``name``."""
        short = [(split, arr.size) for split, arr in (("training", self.train), ("held-out", self.heldout))
                 if arr.size < seq_len]
        if short:
            split, size = short[0]
            raise ValueError(f"{name}: the {split} part of {self.source} has {size} bytes, fewer than one sequence "
                             f"of seq_len = {seq_len}; give a longer text or a shorter --seq-len")

    def frequencies(self) -> np.ndarray:
        """Training byte frequencies with add-one smoothing, shape (256,)."""
        counts = np.bincount(self.train, minlength=BYTES).astype(np.float64) + 1.0
        return counts / counts.sum()

    def unigram_nats(self, targets: np.ndarray | None = None) -> float:
        """Cross-entropy (nats per byte) of ``targets`` (default: all held-out bytes) under the training
        frequencies: the loss of a model that ignores the context."""
        targets = self.heldout if targets is None else np.asarray(targets)
        return float(-np.log(self.frequencies())[targets].mean())

    def context_free_nats(self, inputs, targets, *, kept: float, replaced: float) -> float:
        """Cross-entropy (nats per predicted byte) of the best masked-language model that sees no context.

        It sees only the input at the predicted position: the mask id, the byte itself (probability
        ``kept``) or a uniformly random byte (probability ``replaced``). After the mask id the byte y has
        the training frequencies f(y); after a byte x it has the posterior
        f(y) (kept [y = x] + replaced/256) / (kept f(x) + replaced/256). ``targets`` < 0 are not predicted.
        This, not the unigram loss, is the level of a model that has learnt nothing from the context
        (BERT's rule lets 10 % of the predicted bytes through unchanged).
        """
        f = self.frequencies()
        inputs, targets = np.asarray(inputs).ravel(), np.asarray(targets).ravel()
        x, y = inputs[targets >= 0], targets[targets >= 0]
        seen = x != MASK
        byte = np.where(seen, x, 0)
        uniform = replaced / BYTES
        posterior = f[y] * (kept * (byte == y) + uniform) / (kept * f[byte] + uniform)
        return float(-np.log(np.where(seen, posterior, f[y])).mean())

    def bigram_nats(self, previous=None, following=None) -> float:
        """Cross-entropy (nats per byte) of each byte given the byte before it, training counts with add-one
        smoothing: what one neighbour of context is worth. Default: every pair of consecutive held-out bytes;
        or the given (previous, following) pairs (a decoder's inputs and targets)."""
        if previous is None:
            previous, following = self.heldout[:-1], self.heldout[1:]
        return float(-np.log(self._conditional()[np.asarray(previous), np.asarray(following)]).mean())

    def trigram_nats(self, before=None, previous=None, following=None) -> float:
        """Cross-entropy (nats per byte) of each byte given the two before it, training counts with add-one
        smoothing over the 256 bytes: what one more neighbour is worth to a next-byte model, which already sees the
        previous byte as its own input. Default: every triple of consecutive held-out bytes; or the given
        (before, previous, following) triples (a decoder's evaluation windows)."""
        key3 = lambda a: (a[:-2].astype(np.int64) << 16) | (a[1:-1].astype(np.int64) << 8) | a[2:]
        seen, counts = np.unique(key3(self.train), return_counts=True)
        contexts = np.bincount(seen >> 8, weights=counts, minlength=BYTES * BYTES)
        if before is None:
            held = key3(self.heldout)
        else:
            held = ((np.asarray(before, dtype=np.int64) << 16) | (np.asarray(previous, dtype=np.int64) << 8)
                    | np.asarray(following, dtype=np.int64)).ravel()
        at = np.minimum(np.searchsorted(seen, held), seen.size - 1)
        n3 = np.where(seen[at] == held, counts[at], 0)
        return float(-np.log((n3 + 1.0) / (contexts[held >> 8] + BYTES)).mean())

    def _conditional(self) -> np.ndarray:
        """P(next byte | byte) from the training pairs, add-one smoothed (256 x 256)."""
        pairs = np.zeros((BYTES, BYTES), dtype=np.float64)
        np.add.at(pairs, (self.train[:-1], self.train[1:]), 1.0)
        pairs += 1.0
        return pairs / pairs.sum(axis=1, keepdims=True)


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's ``.py`` files, sorted by relative path (see the module docstring)."""
    root = Path(sysconfig.get_paths()["stdlib"]) if root is None else Path(root)
    files = [path for path in root.rglob("*.py")
             if not EXCLUDED_DIRS.intersection(path.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def is_heldout(relative_path: str) -> bool:
    """The file-level split: CRC-32 of the relative path divisible by :data:`HELDOUT_MODULUS`."""
    return zlib.crc32(relative_path.encode()) % HELDOUT_MODULUS == 0


@lru_cache(maxsize=2)
def stdlib_corpus(root: str | None = None) -> Corpus:
    """The standard library's source split into training and held-out bytes by file (cached per process)."""
    base = Path(sysconfig.get_paths()["stdlib"]) if root is None else Path(root)
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    for path in stdlib_files(base):
        parts[is_heldout(path.relative_to(base).as_posix())].append(path.read_bytes())
    train, heldout = (np.frombuffer(b"\n".join(parts[k]), dtype=np.uint8) for k in (False, True))
    if train.size == 0 or heldout.size == 0:
        raise ValueError(f"no Python source found under {base} to build the corpus from; pass a text file")
    return Corpus(train.copy(), heldout.copy(), f"the Python standard library at {base}")


@lru_cache(maxsize=4)
def text_corpus(path: str, heldout_fraction: float = 0.1) -> Corpus:
    """A user's text file as bytes; its last ``heldout_fraction`` is held out (cached per process)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"text: {path!r} is not a readable file")
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must lie in (0, 1), got {heldout_fraction!r}")
    data = np.frombuffer(file.read_bytes(), dtype=np.uint8)
    cut = int(round(data.size * (1.0 - heldout_fraction)))
    return Corpus(data[:cut].copy(), data[cut:].copy(), f"{path!r}")


def load(text: str | None = None) -> Corpus:
    """The corpus of a run: the standard library (``text=None``) or the file ``text``."""
    return stdlib_corpus() if text is None else text_corpus(str(text))
