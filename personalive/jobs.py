"""`animate` and `batch` jobs (placeholder until the media/CLI issue lands)."""

from personalive.errors import PersonaLiveError


def animate_command(**kwargs):
    from personalive.config import load_config

    load_config(kwargs.get("config"), kwargs.get("overrides", ()))
    raise PersonaLiveError("`personalive animate` is not implemented yet")


def batch_command(**_kwargs):
    raise PersonaLiveError("`personalive batch` is not implemented yet")
