"""Export side of ecg-edge (import name `ecg_edge.export`): ONNX FP32/FP16/INT8, TensorRT, manifest.

Only the Keras -> ONNX step needs TensorFlow, and imports it lazily.
"""
