"""derive (being assembled)."""

from . import symbols
