"""The C shortcuts of schemas/_native.c, or None where the extension was not built (the Python models then work)."""

from __future__ import annotations

from types import ModuleType

compiled: ModuleType | None
try:
    from schemas import _native as compiled
except ImportError:  # no C compiler where it was installed: slower, never different
    compiled = None
