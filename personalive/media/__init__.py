"""Media I/O with PyAV: driving-video source, reference image, H.264 sink with audio. No models here."""
