"""The newest revision of each registry record: held from before a restart, and applied since last kept."""

from __future__ import annotations


class AppliedRevisions:
    """Revisions (epoch ms) by record key: a floor known from before, and those applied since drain() last took them."""

    def __init__(self) -> None:
        self.floor: dict[str, int] = {}
        self._fresh: dict[str, int] = {}

    def hold(self, marks: dict[str, int]) -> None:
        """Know the newest revision of each record applied before (kept by the worker): anything older is ignored."""
        _raise(self.floor, marks)

    def applied(self, key: str, revision: int) -> None:
        """Note a revision just applied, to be kept."""
        _raise(self._fresh, {key: revision})

    def drain(self) -> dict[str, int]:
        """The newest revision of each record applied since the last call, to keep."""
        fresh, self._fresh = self._fresh, {}
        return fresh

    def hold_back(self, marks: dict[str, int]) -> None:
        """Take back revisions that could not be kept, to be kept with the next ones."""
        _raise(self._fresh, marks)


def _raise(into: dict[str, int], marks: dict[str, int]) -> None:
    for key, revision in marks.items():
        into[key] = max(revision, into.get(key, revision))
