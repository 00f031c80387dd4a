"""The TensorRT backend: engine build (:mod:`.build`) and runtime (:mod:`.runtime`); TensorRT is imported lazily.

The ONNX graph it is built from, the artifact sidecar and verification are not TensorRT: see
:mod:`personalive.backends.onnx`, :mod:`personalive.backends.artifacts` and :mod:`personalive.backends.verify`.
"""
