"""The clinic side: signing and publishing visit events, the QĐ 4750 dossier adapter, clinic keys and identity cards."""
