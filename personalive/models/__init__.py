"""The PersonaLive networks, one per file, checkpoint-compatible with the official release."""
