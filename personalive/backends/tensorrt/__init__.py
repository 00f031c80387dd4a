"""TensorRT backend: ONNX export, engine build, runtime, verification. TensorRT is imported lazily."""
