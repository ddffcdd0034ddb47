"""The clinic side: signing and publishing visit events, clinic keys, and synthetic clinics for demos."""
