"""Weights in the official ``pretrained_weights`` layout: the layout table (:mod:`.layout`), strict loading
(:mod:`.load`) and the check (:mod:`.check`). Random weights in the same layout: :mod:`personalive.random_weights`.
"""

from personalive.weights.check import check_command, check_layout
from personalive.weights.configs import read_sizes
from personalive.weights.layout import NETWORKS, TEMPORAL_KEY, WeightsLayout
from personalive.weights.load import ModelSet, build_network, load_models, read_state_dict, weights_hash

__all__ = [
    "NETWORKS",
    "TEMPORAL_KEY",
    "ModelSet",
    "WeightsLayout",
    "build_network",
    "check_command",
    "check_layout",
    "load_models",
    "read_sizes",
    "read_state_dict",
    "weights_hash",
]
