"""build-engine / verify-engine (placeholder until the TensorRT issue lands)."""

from personalive.errors import PersonaLiveError


def build_engine_command(**_kwargs):
    raise PersonaLiveError("`personalive build-engine` is not implemented yet")


def verify_engine_command(**_kwargs):
    raise PersonaLiveError("`personalive verify-engine` is not implemented yet")
