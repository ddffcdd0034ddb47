"""The kernel every side uses: settings, Kafka clients, the database and health-book store, observability, back-off."""
