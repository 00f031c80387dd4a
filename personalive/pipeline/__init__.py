"""Streaming generation: reference fusion, conditioning, scheduler, window loop, keyframes."""
