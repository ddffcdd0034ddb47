"""Shared wiring of the healthbook services: configuration, topics, database and the command line."""
