"""The faust worker that validates, deduplicates and projects visit events into the health book."""
