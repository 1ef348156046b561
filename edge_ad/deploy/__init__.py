"""From a trained model to deployable files: ONNX export, INT8 quantization, TensorRT engine build."""
