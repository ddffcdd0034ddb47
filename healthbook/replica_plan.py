"""Which brokers each partition should live on when a topic's replication factor is realigned (pure)."""

from __future__ import annotations


class NotEnoughBrokers(RuntimeError):
    """The cluster has fewer live brokers than the replication factor asks for."""


def realigned(replicas: list[int], brokers: list[int], factor: int, partition: int) -> list[int] | None:
    """The partition's new replica list for factor copies, or None when it already has them.

    The current replicas stay, leader first, so no data moves that need not; new ones are taken
    from the other brokers in an order rotated by the partition number, which spreads them.
    """
    if len(replicas) == factor:
        return None
    keep = replicas[:factor]
    ordered = sorted(brokers)
    shift = partition % len(ordered) if ordered else 0
    spare = [b for b in ordered[shift:] + ordered[:shift] if b not in keep]
    wanted = keep + spare[: factor - len(keep)]
    if len(wanted) < factor:
        raise NotEnoughBrokers(f"{factor} replicas are asked for but the cluster has {len(brokers)} live broker(s) "
                               f"({', '.join(map(str, ordered)) or 'none'}): start the others, or set "
                               "HEALTHBOOK_BROKERS to the number there are")
    return wanted
