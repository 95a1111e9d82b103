"""Reading exams: a CODE-layout HDF5 exam goes through `prepare` like any recording, with the numbers it
always had (model input as stored, flags and measurements on the unpadded 400 Hz signal, its padding)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_code_hdf5

from ecg_edge.errors import InputError
from ecg_edge.exams import ReadOptions, iter_exams, read_exam
from ecg_edge.measure import measure
from ecg_edge.quality import assess, unpadded_span
from ecg_edge.readers.hdf5 import code_exam_recording
from ecg_edge.spec import LEADS, N_SAMPLES, UNITS


def _code_exams():
    from ecg_edge.synthetic import synthesize

    x, _ = synthesize(4, seed=7)
    x[1, :1148] = 0
    x[1, -948:] = 0  # 5 s stored off-centre, as CODE files may hold them
    x[2, :, LEADS.index("V2")] = 0  # a flat lead
    x[3] = 0  # nothing recorded
    return x


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.1])
def test_code_hdf5_exam_keeps_its_numbers(tmp_path, scale):
    """What a CODE exam at 400 Hz and 4096 samples always gave: the stored array (times --scale) as the
    model input, flags and measurements on the samples between its zero padding, the padding as stored."""
    x = _code_exams()
    h5 = write_code_hdf5(tmp_path / "code.h5", x, exam_ids=[10, 11, 12, 13])
    options = ReadOptions(scale=scale, keep_traces=True, measure="intervals")
    read = list(iter_exams([h5], options, on_skip=print))
    assert [exam.id for exam, _ in read] == ["10", "11", "12", "13"]
    for (exam, model_input), stored in zip(read, x, strict=True):
        scaled = stored.astype(np.float32) * scale if scale != 1.0 else stored.astype(np.float32)
        start, stop = unpadded_span(scaled)
        signal = scaled[start:stop]
        assert model_input.dtype == np.float32 and np.array_equal(model_input, scaled)
        assert exam.trace is not None and exam.trace.dtype == np.float32 and np.array_equal(exam.trace, signal)
        assert exam.quality == [f.as_dict() for f in assess(signal, signal, 400, N_SAMPLES - (stop - start))]
        assert exam.measurements == measure(signal, 400, intervals=True)
        assert exam.source == str(h5) and exam.fs == 400
        assert exam.provenance == {
            "source": str(h5), "format": "hdf5", "sampling_rate_hz": 400.0, "units": UNITS,
            "duration_s": round((stop - start) / 400, 4), "leads_stored": list(LEADS), "leads_derived": [],
            "resampled": None, "padded_before": start, "padded_after": N_SAMPLES - stop,
            "cropped_before": 0, "cropped_after": 0, "scale": scale,
        }
    assert [q["flag"] for q in read[1][0].quality] == ["padded"] and read[1][0].provenance["padded_before"] == 1148
    assert read[3][0].provenance["duration_s"] == 0.0 and not read[3][1].any()


def test_code_exam_is_a_recording_through_prepare():
    """The HDF5 reader hands an exam over as the recording it holds; prepare puts its zeros back in place."""
    x = _code_exams()[1]
    recording, padding = code_exam_recording("11", "f.h5", x)
    assert padding == (1148, 948) and recording.signal.shape == (N_SAMPLES - 1148 - 948, 12)
    assert recording.fs == 400 and recording.leads == tuple(LEADS) and recording.format == "hdf5"
    exam, model_input = read_exam(recording, "f.h5", ReadOptions(), padding)
    assert np.array_equal(model_input, x) and exam.provenance["padded_after"] == 948


def test_bad_code_exam_names_its_file_and_exam(tmp_path):
    x = _code_exams()
    x[2, 100, 3] = np.nan
    h5 = write_code_hdf5(tmp_path / "nan.h5", x, exam_ids=[10, 11, 12, 13])
    with pytest.raises(InputError, match=r"nan\.h5 \(exam 12\): signal holds 1 NaN"):
        list(iter_exams([h5], ReadOptions(), on_skip=print))
    skipped: list[str] = []
    kept = [exam.id for exam, _ in iter_exams([h5], ReadOptions(keep_going=True), on_skip=skipped.append)]
    assert kept == ["10", "11", "13"] and len(skipped) == 1 and "(exam 12)" in skipped[0]
