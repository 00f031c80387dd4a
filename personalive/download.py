"""Official weights download (placeholder until the examples/README issue lands)."""

from personalive.errors import PersonaLiveError


def download_command(directory=None):
    raise PersonaLiveError("`personalive weights download` is not implemented yet")
