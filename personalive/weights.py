"""Weights in the official layout (placeholder until the networks issue lands)."""

from personalive.errors import PersonaLiveError


def check_command(directory=None):
    raise PersonaLiveError("`personalive weights check` is not implemented yet")


def init_random_command(directory, size="tiny", seed=0):
    raise PersonaLiveError("`personalive weights init-random` is not implemented yet")
