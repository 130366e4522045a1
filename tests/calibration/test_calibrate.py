"""``fsqdeploy calibrate``: the targets on the sample test split, the record, the manifest, the errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from fsqdeploy.artifact import add_files, read_manifest, verify_files
from fsqdeploy.calibration.quantize import METHODS
from fsqdeploy.data import load_images
from fsqdeploy.fileio import sha256_file
from fsqdeploy.images import images_to_float
from fsqdeploy.runtime.codec import Codec

INT8 = ("encoder.int8.onnx", "decoder.int8.onnx")


def record(art: Path) -> dict:
    return json.loads((art / "calibration.json").read_text())


def snapshot(art: Path) -> dict[str, str]:
    return {str(p.relative_to(art)): sha256_file(p) for p in sorted(art.rglob("*")) if p.is_file()}


def image_folder(path: Path, count: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    photo = load_images("sample", 32).test
    for i in range(count):
        Image.fromarray(photo[i].transpose(1, 2, 0)).save(path / f"{i:03d}.png")
    return path


@pytest.mark.parametrize("method", METHODS)
def test_targets_hold_on_the_sample_test_split(cli, art_int8, method):
    code, out, err = cli("calibrate", art_int8, "--data", "sample", "--method", method, "--sensitivity")
    assert code == 0, err
    r = record(art_int8)
    results = r["results"]
    assert results["data"] == "sample" and results["images"] == len(load_images("sample", 32).test)
    assert results["index_agreement"] >= 0.99, out
    assert results["psnr_int8"] >= results["psnr_fp32"] - 0.5, out
    assert results["targets_met"] and "target >= 99%: met" in out
    assert r["method"] == method and r["samples"] == 512 and r["data"]["source"] == "sample"
    assert r["sensitivity"]["encoder"]["layers"] and all(s["scale"] > 0 for s in r["scales"]["encoder"].values())
    manifest = read_manifest(art_int8)
    assert not verify_files(manifest, art_int8)
    assert {*INT8, "calibration.json"} <= set(manifest["files"])
    assert manifest["int8"]["method"] == method and manifest["int8"]["index_agreement"] == results["index_agreement"]
    assert r["source_onnx"]["encoder.onnx"] == manifest["files"]["encoder.onnx"]["sha256"]


def test_the_int8_codec_reproduces_the_recorded_numbers(cli, art_int8):
    code, _, err = cli("calibrate", art_int8, "--samples", "256")
    assert code == 0, err
    images = images_to_float(load_images("sample", 32).test)
    with Codec.load(art_int8, "onnxruntime") as fp32, Codec.load(art_int8, "onnxruntime", precision="int8") as int8:
        assert int8.precision == "int8"
        agreement = float(np.mean(int8.encode(images) == fp32.encode(images)))
    assert agreement == pytest.approx(record(art_int8)["results"]["index_agreement"], abs=1e-12)


def test_the_record_is_reused_and_rebuilt(cli, art_int8):
    assert cli("calibrate", art_int8, "--samples", "128")[0] == 0
    before = snapshot(art_int8)
    code, out, _ = cli("calibrate", art_int8, "--samples", "128")
    assert code == 0 and out.startswith("reusing calibration record")
    assert snapshot(art_int8) == before
    # A lost INT8 graph is rebuilt from the recorded ranges, byte for byte, without calibrating again.
    (art_int8 / "decoder.int8.onnx").unlink()
    code, out, _ = cli("calibrate", art_int8, "--samples", "128")
    assert code == 0 and out.startswith("reusing calibration record")
    assert snapshot(art_int8) == before
    for lost in ("encoder.int8.onnx", "encoder.int8.trt.onnx"):  # the TensorRT graphs too
        (art_int8 / lost).unlink()
    code, out, _ = cli("calibrate", art_int8, "--samples", "128")
    assert code == 0 and out.startswith("reusing calibration record")
    assert snapshot(art_int8) == before


def test_a_changed_model_data_or_setting_invalidates_the_record(cli, art_int8, tmp_path):
    folder = image_folder(tmp_path / "photos", 40)
    assert cli("calibrate", art_int8, "--data", f"folder:{folder}", "--samples", "32",
                         "--batch-size", "16")[0] == 0
    first = record(art_int8)

    image_folder(folder, 41)  # one more photo: another subset digest
    code, out, _ = cli("calibrate", art_int8, "--data", f"folder:{folder}", "--samples", "32",
                                 "--batch-size", "16")
    assert code == 0 and "recalibrating: the data changed (digest" in out
    assert record(art_int8)["data"]["digest"] != first["data"]["digest"]

    code, out, _ = cli("calibrate", art_int8, "--data", f"folder:{folder}", "--samples", "32",
                                 "--batch-size", "8")
    assert code == 0 and "recalibrating: the settings changed (batch_size)" in out

    model = onnx.load(str(art_int8 / "encoder.onnx"))  # a re-exported model: same graph, other bytes
    model.metadata_props.append(onnx.StringStringEntryProto(key="note", value="re-exported"))
    onnx.save(model, str(art_int8 / "encoder.onnx"))
    add_files(art_int8, ["encoder.onnx"])
    code, out, _ = cli("calibrate", art_int8, "--data", f"folder:{folder}", "--samples", "32",
                                 "--batch-size", "8")
    assert code == 0 and "recalibrating: the model changed (encoder.onnx sha256)" in out
    assert record(art_int8)["source_onnx"]["encoder.onnx"] == sha256_file(art_int8 / "encoder.onnx")


@pytest.mark.parametrize("args,match", [
    (["--data", "folder:{empty}"], "data: no images in"),
    (["--samples", "32"], "calibrate: --samples 32 is fewer than one batch (--batch-size 64)"),
    (["--data", "folder:{five}", "--samples", "8", "--batch-size", "4"],
     "has 5 training images at 32 px, fewer than --samples 8"),
    (["--data", "folder:{five}"], "has 5 training images at 32 px, fewer than one batch (--batch-size 64)"),
    (["--method", "kl"], "calibrate: unknown method 'kl'. Note: use one of minmax, entropy, percentile"),
    (["--batch-size", "0"], "calibrate: --batch-size must be at least 1"),
    (["--data", "imagenet"], "data: unknown data source 'imagenet'"),
], ids=["empty-folder", "fewer-samples-than-a-batch", "more-samples-than-images", "fewer-images-than-a-batch",
        "unknown-method", "batch-size", "unknown-data"])
def test_bad_inputs_give_one_line_and_write_nothing(cli, one_line_error, trained_art, tmp_path, args, match):
    (tmp_path / "empty").mkdir()
    image_folder(tmp_path / "five", 5)
    args = [a.format(empty=tmp_path / "empty", five=tmp_path / "five") for a in args]
    before = snapshot(trained_art)
    code, _, err = cli("calibrate", trained_art, *args)
    one_line_error(code, err, match)
    assert snapshot(trained_art) == before


def test_a_missing_artifact_is_one_line(cli, one_line_error, tmp_path):
    code, _, err = cli("calibrate", tmp_path / "nowhere")
    one_line_error(code, err, "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_the_codec_asks_for_calibration_when_there_is_no_int8_graph(trained_art):
    from fsqdeploy.errors import FSQDeployError

    with pytest.raises(FSQDeployError, match="has no encoder.int8.onnx. Note: calibrate it with fsqdeploy calibrate"):
        Codec.load(trained_art, "onnxruntime", precision="int8")


def test_accuracy_is_the_comparison_of_the_two_codecs(trained_art):
    """measure() through fsqdeploy.compare gives the numbers the targets were defined on: the share
    of equal indices and each round trip's mean per-image PSNR against the input (float64 mean),
    with every graph run in batches of EVAL_BATCH images."""
    import torch

    from fsqdeploy.backends.onnxruntime import ort_session
    from fsqdeploy.calibration.accuracy import EVAL_BATCH, measure, run
    from fsqdeploy.metrics import psnr

    images = images_to_float(load_images("sample", 32).test)
    fp32 = (ort_session(trained_art / "encoder.onnx"), ort_session(trained_art / "decoder.onnx"))

    class Nudged:
        """A stand-in for an INT8 encoder: the FP32 one with every fifth index of each batch's
        fourth image moved by one level."""

        def get_inputs(self):
            return fp32[0].get_inputs()

        def run(self, outputs, feed):
            idx = fp32[0].run(outputs, feed)[0].copy()
            idx[3, ::5] = (idx[3, ::5] + 1) % 8
            return [idx]

    result = measure(images, fp32, (Nudged(), fp32[1]))
    idx32, idx8 = run(fp32[0], images, EVAL_BATCH), run(Nudged(), images, EVAL_BATCH)
    assert result.index_agreement == float(np.mean(idx8 == idx32)) < 1.0

    def round_trip(idx):
        decoded = run(fp32[1], idx, EVAL_BATCH)
        return float(psnr(torch.from_numpy(decoded), torch.from_numpy(images)).double().numpy().mean())

    assert result.psnr_fp32 == round_trip(idx32)
    assert result.psnr_int8 == round_trip(idx8) != result.psnr_fp32  # its own indices, decoded
