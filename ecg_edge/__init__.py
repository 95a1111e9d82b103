"""ecg-edge: the Ribeiro et al. 12-lead ECG network from training to the edge.

Importing this package never imports TensorFlow: it is the runtime that runs on a Jetson.
"""

from ecg_edge.errors import InputError
from ecg_edge.preprocess import to_model_input
from ecg_edge.readers import iter_recordings, read_recording
from ecg_edge.recording import Recording

__version__ = "0.1.0"

__all__ = ["InputError", "Recording", "iter_recordings", "read_recording", "to_model_input", "__version__"]
