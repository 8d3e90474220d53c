import numpy as np
import pytest

from edgert.compress.calibration import METHODS, TensorStats, amax, collect, load_calibration
from edgert.errors import CalibrationError
from edgert.model import load


def _stats(draw, batches=100, size=10_000, seed=0) -> TensorStats:
    rng = np.random.default_rng(seed)
    s = TensorStats()
    for _ in range(batches):
        s.update(draw(rng, size))
    return s


def test_ranges_of_a_known_gaussian():
    s = _stats(lambda rng, n: rng.standard_normal(n))
    # two-sided 99.99% of N(0,1) is 3.891; min-max is the largest |x| of 1e6 draws (about 4.9)
    assert amax(s, "percentile", 99.99) == pytest.approx(3.891, abs=0.03)
    assert amax(s, "percentile", 99.0) == pytest.approx(2.576, abs=0.01)
    assert amax(s, "minmax") == pytest.approx(max(-s.min, s.max)) and 4.4 < amax(s, "minmax") < 5.6
    # MSE-optimal clipping of a Gaussian for 8 bits lies near 4 sigma; KL keeps more of the tail
    assert 3.3 < amax(s, "mse") < 4.4
    assert 3.5 < amax(s, "entropy") <= amax(s, "minmax")


def test_heavy_tails_are_clipped_and_uniform_is_not():
    lap = _stats(lambda rng, n: rng.laplace(size=n))
    assert amax(lap, "entropy") < 0.95 * amax(lap, "minmax")
    assert amax(lap, "mse") < 0.9 * amax(lap, "minmax")
    uni = _stats(lambda rng, n: rng.uniform(-2, 2, n))
    for method in METHODS:
        assert amax(uni, method) == pytest.approx(2.0, rel=0.03), method


def test_discrete_values_keep_their_full_range():
    # 17 grey levels (the digits images): every level fits in int8, nothing should be clipped.
    s = _stats(lambda rng, n: rng.integers(0, 17, n) / 16.0, batches=10)
    for method in METHODS:
        assert amax(s, method) == pytest.approx(1.0, rel=0.01), method


def test_histogram_grows_its_range_without_growing_memory():
    rng = np.random.default_rng(1)
    s = TensorStats()
    s.update(rng.standard_normal(1000) * 0.01)
    size = s.nbytes()
    data = [rng.standard_normal(1000) * scale for scale in np.geomspace(0.01, 100, 200)]
    for x in data:
        s.update(x)
    assert s.nbytes() == size and len(s.counts) == 2048
    assert s.counts.sum() == 201 * 1000 and s.samples == 201
    # the merged histogram still gives the right quantile (within two of its bins)
    allx = np.abs(np.concatenate([*data, np.zeros(0)]))
    assert abs(amax(s, "percentile", 90.0) - np.percentile(allx, 90.0)) < 2 * s.width + 0.02 * np.percentile(allx, 90)


def test_collect_memory_is_independent_of_the_sample_count(data_dir):
    model = load(data_dir / "convnet_tiny.onnx")
    spec = model.inputs[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, *spec.shape[1:])).astype(np.float32)
    tensors = [n.output[0] for n in model.proto.graph.node][:3]
    few = collect(model.proto, load_calibration({spec.name: x[:4]}, model), tensors)
    many = collect(model.proto, load_calibration({spec.name: x}, model), tensors)
    assert [s.nbytes() for s in few.values()] == [s.nbytes() for s in many.values()]
    assert all(s.samples == 40 for s in many.values())
    # the statistics are the activations' own: min/max match a direct run
    from edgert.compress.calibration import intermediate_session

    run = intermediate_session(model.proto, tensors)
    outs = [run({spec.name: x[i : i + 1].reshape(spec.shape)}) for i in range(40)]
    for t in tensors:
        assert many[t].max == pytest.approx(max(float(o[t].max()) for o in outs))


def test_sources(tmp_path, data_dir):
    model = load(data_dir / "convnet_tiny.onnx")
    spec = model.inputs[0]
    x = np.random.default_rng(0).standard_normal((3, *spec.shape[1:])).astype(np.float32)
    np.savez(tmp_path / "c.npz", whatever=x)  # one input: the array's name does not matter
    calib = load_calibration(tmp_path / "c.npz", model)
    feeds = list(calib)
    assert calib.size == 3 and feeds[2][spec.name].shape == spec.shape
    np.testing.assert_array_equal(feeds[1][spec.name][0], x[1])
    assert calib.take(2).size == 2 and len(list(calib.take(2))) == 2
    with pytest.raises(CalibrationError, match="not an .npz file"):
        load_calibration(tmp_path / "missing", model)
    np.savez(tmp_path / "bad.npz", a=x, b=x)
    with pytest.raises(CalibrationError, match=spec.name):
        load_calibration(tmp_path / "bad.npz", model)
    np.savez(tmp_path / "shape.npz", a=x[:, :1])
    with pytest.raises(CalibrationError, match="shape"):
        load_calibration(tmp_path / "shape.npz", model)


def test_zoo_and_image_folder_sources(tmp_path):
    from PIL import Image

    from edgert.zoo import get

    model = load(get("digits_cnn").onnx_path)
    calib = load_calibration("digits_cnn", model)
    assert calib.zoo == "digits_cnn" and calib.size == 270
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 51 * i, np.uint8)).save(folder / f"{i}.png")
    images = list(load_calibration(folder, model))
    assert len(images) == 3 and images[0]["input"].shape == (1, 1, 8, 8)
    assert images[2]["input"].max() == pytest.approx(102 / 255)
