"""The reading side: the consent-gated query consumer, the analytics subscriber, dead letters and status."""
