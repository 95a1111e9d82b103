"""The model's input and output contract: the one place for these facts."""

from __future__ import annotations

from typing import Any

INPUT_NAME = "signal"
SAMPLING_RATE_HZ = 400
N_SAMPLES = 4096
# Lead order of the Ribeiro network (and of CODE-layout HDF5 files).
LEADS: tuple[str, ...] = (
    "DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
UNITS = "mV"
# What amplitudes the network expects, and the one known exception among public datasets.
AMPLITUDE_NOTE = "millivolts; CODE-layout HDF5 taken as it is (CODE-15% is about 2x mV: pass --scale 0.5)"
# Suffixes of CODE-layout HDF5 files (many exams per file).
HDF5_SUFFIXES: tuple[str, ...] = (".h5", ".hdf5")
# Precisions, in the order tables list them. bf16 has no file: OpenVINO runs the FP32 file in bfloat16.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
# Batch range TensorRT builds for (engines, and the TensorRT EP's): smallest, typical, largest.
BATCH_PROFILE: dict[str, int] = {"min": 1, "opt": 64, "max": 256}

CLASSES: tuple[str, ...] = ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")
BINARY_CLASSES: tuple[str, ...] = ("abnormal",)
# Name of the output tensor per task (ONNX graphs, TensorRT engines, Triton configs).
OUTPUT_NAMES: dict[str, str] = {"six": "abnormalities", "binary": "abnormal"}
# Label column of the binary task in a labels CSV (1 = normal, so abnormal = 1 - normal_ecg).
NORMAL_COLUMN = "normal_ecg"

# Thresholds the reference chose on its validation set for the released weights.
REFERENCE_THRESHOLDS: dict[str, float] = {
    "1dAVb": 0.124, "RBBB": 0.07, "LBBB": 0.05, "SB": 0.278, "AF": 0.390, "ST": 0.174,
}



def called(probabilities: Any, thresholds: Any) -> Any:
    """Where a finding is called: probability strictly above its class's threshold, as the reference
    code does (its thresholds were chosen with that rule). Works on arrays, broadcasting by class."""
    return probabilities > thresholds


# Spelling variants of lead names, upper-cased without spaces, hyphens or underscores, mapped onto LEADS.
LEAD_ALIASES: dict[str, str] = {
    "I": "DI", "D1": "DI", "DI": "DI",
    "II": "DII", "D2": "DII", "DII": "DII",
    "III": "DIII", "D3": "DIII", "DIII": "DIII",
    "AVR": "AVR", "AVL": "AVL", "AVF": "AVF",
    **{f"V{i}": f"V{i}" for i in range(1, 7)},
}
# Prefixes that files put before a lead's name: 'Lead I' (DICOM), 'ECG V1' / 'EKG II' (EDF),
# 'MDC_ECG_LEAD_AVR' (HL7 aECG); written as normalised above, longest first.
LEAD_PREFIXES: tuple[str, ...] = ("MDCECGLEAD", "LEAD", "ECG", "EKG")

# SNOMED CT codes (WFDB `# Dx:` headers) that map onto the six classes.
SNOMED_TO_CLASS: dict[str, str] = {
    "270492004": "1dAVb",
    "59118001": "RBBB", "713427006": "RBBB",
    "164909002": "LBBB", "733534002": "LBBB",
    "426177001": "SB",
    "164889003": "AF",
    "427084000": "ST",
}


# What each output means, for people: full name and the SNOMED CT concept (the first code above).
CLASS_NAMES: dict[str, str] = {
    "1dAVb": "first degree atrioventricular block",
    "RBBB": "right bundle branch block",
    "LBBB": "left bundle branch block",
    "SB": "sinus bradycardia",
    "AF": "atrial fibrillation",
    "ST": "sinus tachycardia",
    "abnormal": "abnormal ECG (any of the abnormalities the binary model was trained on)",
}
DISCLAIMER = ("Findings are the output of a machine-learning model, not a diagnosis: "
              "an ECG must be read by a qualified clinician.")


def describe_finding(name: str) -> dict[str, Any]:
    """A finding with its full name and SNOMED CT code (None where no single concept fits)."""
    code = next((c for c, cls in SNOMED_TO_CLASS.items() if cls == name), None)
    return {"abbreviation": name, "name": CLASS_NAMES.get(name, name), "snomed_ct": code}


def class_names(task: str) -> tuple[str, ...]:
    """Output names of a task: 'six' (the six abnormalities) or 'binary' (abnormal)."""
    if task == "six":
        return CLASSES
    if task == "binary":
        return BINARY_CLASSES
    raise ValueError(f"unknown task {task!r}: expected 'six' or 'binary'")
