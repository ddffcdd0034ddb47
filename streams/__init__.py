"""The worker side: the faust worker, its one batch step, and replay through that same step."""
