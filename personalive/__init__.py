"""personalive: offline, batch video-to-video portrait animation with the PersonaLive model.

Importing the package loads no torch, diffusers or tensorrt: the CLI's ``--help`` stays fast.
"""

__version__ = "0.1.0"
