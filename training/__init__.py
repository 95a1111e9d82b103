"""Training side of ecg-edge (import name `ecg_edge.training`): needs the `train` extra.

Submodules import TensorFlow/Keras themselves; importing this package does not.
"""
