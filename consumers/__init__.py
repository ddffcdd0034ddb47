"""The query side: the consent-gated health-book query consumer and operator tools."""
