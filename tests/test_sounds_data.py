"""rarespot.sounds.data: both layouts, cutting/padding, patient-wise splits, bad input."""

from __future__ import annotations

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from rarespot.errors import InputError  # noqa: E402
from rarespot.sounds.data import (  # noqa: E402
    AnnotationWarning,
    Cycle,
    class_counts,
    cut_cycle,
    cycles_for_recording,
    fit_length,
    fixed_windows,
    label_from_flags,
    load_cycles,
    load_manifest,
    load_official,
    parse_annotation,
    patient_kfold,
    patient_split,
    read_diagnoses,
    read_split_file,
)

RATE = 4000


def write_recording(folder, name, seconds, cycles, rate=RATE, suffix=".wav"):
    """A noise recording plus its annotation (list of (start, end, crackle, wheeze))."""
    rng = np.random.default_rng(len(name))
    sf.write(folder / f"{name}{suffix}", (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)
    (folder / f"{name}.txt").write_text("".join(f"{s}\t{e}\t{c}\t{w}\n" for s, e, c, w in cycles))


def test_label_from_flags():
    assert [label_from_flags(c, w) for c, w in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 1, 2, 3]


def test_parse_annotation_tabs_and_spaces(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("0.036\t2.279\t0\t1\n2.279 4.879 1 1\n\n")
    assert parse_annotation(p) == [(0.036, 2.279, 0, 1), (2.279, 4.879, 1, 1)]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("0 1 0\n", "line 1: expected 4 fields"),
        ("0 1 0 0\n0 x 0 0\n", "line 2: cannot read numbers"),
        ("0 1 2 0\n", "line 1: crackle and wheeze must be 0 or 1"),
        ("2 1 0 0\n", "line 1: cycle end 1.0 is not after its start 2.0"),
        ("\n\n", "annotation file lists no cycles"),
    ],
)
def test_parse_annotation_errors_name_file_and_line(tmp_path, text, problem):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(InputError, match="bad.txt: " + problem):
        parse_annotation(p)


def test_official_layout_with_split_and_diagnoses(tmp_path):
    write_recording(tmp_path, "101_1b1_Al_sc_Meditron", 6, [(0, 2, 0, 0), (2, 4, 1, 0), (4, 6, 1, 1)])
    write_recording(tmp_path, "102_1b1_Ar_sc_Meditron", 4, [(0.5, 2, 0, 1)], suffix=".flac")
    (tmp_path / "ICBHI_challenge_train_test.txt").write_text("101_1b1_Al_sc_Meditron\ttrain\n102_1b1_Ar_sc_Meditron\ttest\n")
    (tmp_path / "patient_diagnosis.csv").write_text("ID,CLASS\n101,URTI\n102,Healthy\n")
    everything = load_official(tmp_path)
    assert [(c.recording, c.index, c.label, c.start, c.end) for c in everything] == [
        ("101_1b1_Al_sc_Meditron", 0, 0, 0.0, 2.0),
        ("101_1b1_Al_sc_Meditron", 1, 1, 2.0, 4.0),
        ("101_1b1_Al_sc_Meditron", 2, 3, 4.0, 6.0),
        ("102_1b1_Ar_sc_Meditron", 0, 2, 0.5, 2.0),
    ]
    assert everything[3].patient == "102" and everything[3].label_name == "wheeze"
    assert [c.recording for c in load_official(tmp_path, split="test")] == ["102_1b1_Ar_sc_Meditron"]
    assert len(load_cycles(tmp_path, split="train")) == 3
    assert read_split_file(tmp_path / "ICBHI_challenge_train_test.txt")["102_1b1_Ar_sc_Meditron"] == "test"
    assert read_diagnoses(tmp_path / "patient_diagnosis.csv") == {"101": "URTI", "102": "Healthy"}


def test_split_needs_split_file(tmp_path):
    write_recording(tmp_path, "101_1b1_Al_sc_Meditron", 2, [(0, 2, 0, 0)])
    with pytest.raises(InputError, match="needs the official split file"):
        load_official(tmp_path, split="train")


def test_bad_split_file(tmp_path):
    p = tmp_path / "split.txt"
    p.write_text("101_1b1_Al_sc_Meditron\tvalidation\n")
    with pytest.raises(InputError, match=r"split.txt: line 1: expected '<recording> train\|test'"):
        read_split_file(p)


def test_recording_without_annotation(tmp_path):
    write_recording(tmp_path, "101_1b1_Al_sc_Meditron", 2, [(0, 2, 0, 0)])
    sf.write(tmp_path / "103_1b1_Al_sc_Meditron.wav", np.zeros(RATE, np.float32) + 0.1, RATE)
    with pytest.raises(InputError, match=r"103_1b1_Al_sc_Meditron.wav: recording has no annotation file \(looked for 103_1b1_Al_sc_Meditron.txt\)"):
        load_official(tmp_path)
    with pytest.warns(AnnotationWarning, match="103_1b1_Al_sc_Meditron.wav: no annotation file"):
        cycles = load_official(tmp_path, missing_annotation="skip")
    assert len(cycles) == 1


def test_cycles_past_the_end_are_clipped_or_dropped_with_a_warning(tmp_path):
    write_recording(tmp_path, "101_1b1_Al_sc_Meditron", 5, [(0, 2, 0, 0), (2, 6.5, 1, 0), (5.2, 7, 0, 1)])
    with pytest.warns(AnnotationWarning, match=r"101_1b1_Al_sc_Meditron.txt: cycles run past the end of .*1 cycle\(s\) \(line 2\) clipped, 1 cycle\(s\) \(line 3\) dropped"):
        cycles = cycles_for_recording(tmp_path / "101_1b1_Al_sc_Meditron.wav")
    assert [(c.start, c.end, c.label) for c in cycles] == [(0, 2, 0), (2, 5.0, 1)]


def test_non_audio_recording(tmp_path):
    (tmp_path / "104_1b1_Al_sc_Meditron.wav").write_text("not audio")
    (tmp_path / "104_1b1_Al_sc_Meditron.txt").write_text("0 1 0 0\n")
    with pytest.raises(InputError, match="104_1b1_Al_sc_Meditron.wav: not a readable audio file"):
        load_official(tmp_path)


def test_manifest_flags_and_label_columns(tmp_path):
    (tmp_path / "clips").mkdir()
    for i in range(3):
        sf.write(tmp_path / "clips" / f"c{i}.flac", np.zeros(RATE, np.float32) + 0.1, RATE)
    (tmp_path / "m.csv").write_text(
        "file,recording,cycle,crackle,wheeze,split\n"
        "clips/c0.flac,101_1b1_Al_sc_Meditron,0,0,0,train\n"
        "clips/c1.flac,101_1b1_Al_sc_Meditron,1,1,1,train\n"
        "clips/c2.flac,102_1b1_Al_sc_Meditron,0,0,1,test\n"
    )
    cycles = load_manifest(tmp_path / "m.csv")
    assert [(c.patient, c.index, c.label, c.start) for c in cycles] == [("101", 0, 0, None), ("101", 1, 3, None), ("102", 0, 2, None)]
    assert [c.label for c in load_cycles(tmp_path / "m.csv", split="test")] == [2]
    (tmp_path / "l.csv").write_text("file,label\nclips/c0.flac,crackle\nclips/c1.flac,Both\n")
    assert [(c.recording, c.label) for c in load_manifest(tmp_path / "l.csv")] == [("c0", 1), ("c1", 3)]


@pytest.mark.parametrize(
    "text, match",
    [
        ("name,crackle\nx,1\n", r"m.csv: manifest needs a 'file' column"),
        ("file,label\nclips/c0.flac,rattle\n", r"m.csv: line 2: label 'rattle' is not one of"),
        ("file,crackle,wheeze\nclips/c0.flac,1,maybe\n", r"m.csv: line 2: invalid literal"),
        ("file,crackle,wheeze\nclips/missing.flac,0,0\n", r"missing.flac: clip listed on line 2 of m.csv not found"),
        ("file,crackle,wheeze\n", r"m.csv: manifest lists no cycles"),
    ],
)
def test_manifest_errors(tmp_path, text, match):
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "c0.flac", np.zeros(RATE, np.float32) + 0.1, RATE)
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(InputError, match=match):
        load_manifest(tmp_path / "m.csv")


def test_load_cycles_bad_paths(tmp_path):
    with pytest.raises(InputError, match="nothing.csv: manifest not found"):
        load_cycles(tmp_path / "nothing.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError, match="x.json: expected a manifest .csv or a folder"):
        load_cycles(tmp_path / "x.json")
    with pytest.raises(InputError, match="no audio files"):
        load_cycles(tmp_path)


def test_cut_and_fit_length_exact():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(cut_cycle(x, 2, 1.0, 2.5), [2, 3, 4])
    np.testing.assert_array_equal(cut_cycle(x, 2, None, None), x)
    np.testing.assert_array_equal(cut_cycle(x, 2, 4.0, 9.0), [8, 9])  # clipped at the end
    np.testing.assert_array_equal(fit_length(np.array([1, 2, 3.0]), 7, "repeat"), [1, 2, 3, 1, 2, 3, 1])
    np.testing.assert_array_equal(fit_length(np.array([1, 2, 3.0]), 5, "zero"), [1, 2, 3, 0, 0])
    np.testing.assert_array_equal(fit_length(x, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(fit_length(np.zeros(0), 3), [0, 0, 0])
    with pytest.raises(ValueError, match="pad mode"):
        fit_length(x, 3, "reflect")


def test_fixed_windows_exact():
    assert fixed_windows(20, 8) == [(0.0, 8.0), (8.0, 16.0), (16.0, 20.0)]  # a 4 s tail is half a window: kept
    assert fixed_windows(19.9, 8) == [(0.0, 8.0), (8.0, 16.0)]  # a 3.9 s tail is dropped
    assert fixed_windows(21, 8) == [(0.0, 8.0), (8.0, 16.0), (16.0, 21.0)]
    assert fixed_windows(3, 8) == [(0.0, 3.0)]
    assert fixed_windows(10, 4, hop=2) == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0), (8.0, 10.0)]


def _synthetic_cycles(n_patients=10, per_patient=12):
    rng = np.random.default_rng(0)
    cycles = []
    for p in range(n_patients):
        for i in range(per_patient):
            label = int(rng.choice(4, p=[0.6, 0.2, 0.15, 0.05]))
            cycles.append(Cycle(f"/x/{100 + p}_1b1_Al_sc_M.wav", f"{100 + p}_1b1_Al_sc_M", i, label, i, i + 1.0))
    return cycles


def test_patient_kfold_never_leaks_a_patient():
    cycles = _synthetic_cycles()
    folds = patient_kfold(cycles, 5, seed=0)
    assert len(folds) == 5
    seen = np.zeros(len(cycles), int)
    for tr, va in folds:
        assert not ({cycles[i].patient for i in tr} & {cycles[i].patient for i in va})
        assert len(tr) + len(va) == len(cycles)
        seen[va] += 1
    assert (seen == 1).all()  # every cycle validated exactly once
    tr, va = patient_split(cycles, 0.2, seed=1)
    assert not ({cycles[i].patient for i in tr} & {cycles[i].patient for i in va})
    assert len({cycles[i].patient for i in va}) == 2
    with pytest.raises(ValueError, match="needs at least 20 patients"):
        patient_kfold(cycles, 20)
    assert class_counts([0, 0, 3]).tolist() == [2, 0, 0, 1]


@pytest.mark.realdata
def test_real_icbhi_manifest_and_recordings(icbhi_dir):
    cycles = load_cycles(icbhi_dir / "cycles.csv", split="train")
    assert len(cycles) == 1049
    assert class_counts([c.label for c in cycles]).tolist() == [740, 147, 120, 42]
    assert len({c.patient for c in cycles}) == 41
    recordings = load_official(icbhi_dir / "recordings", split="train", split_file=icbhi_dir / "ICBHI_challenge_train_test.txt")
    assert len({c.recording for c in recordings}) == 10
    first = [c for c in recordings if c.recording == "105_1b1_Tc_sc_Meditron"][0]
    assert (first.start, first.end, first.label) == (0.036, 2.279, 0)
