import numpy as np
import pytest
from click.testing import CliRunner

from edgert.cli import main
from edgert.errors import EdgertError
from edgert.zoo import calibration_data, datasets, evaluate, get, list_models, validation_data

NAMES = ("digits_cnn", "mobilenetv2_digits", "vit_digits", "tcn_kws")


def test_zoo_has_the_four_models():
    models = {m.name: m for m in list_models()}
    assert set(NAMES) <= set(models)
    for m in models.values():
        assert m.onnx_path.is_file() and m.card_path.is_file()
        assert f"{m.float_accuracy:.4f}" in m.card_path.read_text(), "the card states the float accuracy"
        assert m.params > 0 and m.macs > 0


@pytest.mark.parametrize("name", NAMES)
def test_card_accuracy_is_reproduced(name):
    model = get(name)
    result = evaluate(name, model.onnx_path)
    assert result.samples == len(validation_data(name).y)
    assert abs(result.accuracy - model.float_accuracy) <= 0.005
    assert result.agreement == 1.0


def test_digits_cnn_is_accurate():
    assert evaluate("digits_cnn", get("digits_cnn").onnx_path).accuracy >= 0.97


@pytest.mark.parametrize("split_of", [lambda: datasets.digits(), lambda: datasets.kws()])
def test_splits_are_deterministic_and_disjoint(split_of):
    a, b = split_of(), split_of()
    sizes = [len(a[s].y) for s in datasets.SPLITS]
    assert sizes[0] > sizes[2] > sizes[1] > 0
    for s in datasets.SPLITS:
        np.testing.assert_array_equal(a[s].x, b[s].x)
    # no sample of the validation split appears in the training or calibration split
    val = {row.tobytes() for row in a["val"].x}
    assert not val & {row.tobytes() for row in a["train"].x}
    assert not val & {row.tobytes() for row in a["calib"].x}


def test_calibration_data_is_the_calibration_split():
    calib = calibration_data("digits_cnn", 16)
    assert list(calib) == [get("digits_cnn").input.name] and calib["input"].shape == (16, 1, 8, 8)
    np.testing.assert_array_equal(calib["input"], datasets.digits()["calib"].x[:16])


def test_unknown_model_and_cli(tmp_path):
    with pytest.raises(EdgertError, match="digits_cnn"):
        get("resnet1000")
    r = CliRunner().invoke(main, ["zoo", "list"])
    assert r.exit_code == 0 and all(n in r.stdout for n in NAMES)
    r = CliRunner().invoke(main, ["zoo", "export", "tcn_kws", "-o", str(tmp_path / "kws")])
    assert r.exit_code == 0, r.output
    calib = np.load(tmp_path / "kws" / "calibration.npz")
    assert calib["input"].shape[1:] == (8, 64)
    r = CliRunner().invoke(main, ["zoo", "export", "tcn_kws", "-o", str(tmp_path / "kws")])
    assert r.exit_code == 1 and "not empty" in r.stderr
