"""The CPEN455 course functions through their fixed signatures, with a tiny model."""
import json
from pathlib import Path

import pytest
import torch

import pcnn
from pcnn.course import hook as course
from pcnn.cli.main import main as cli_main

from conftest import rand_images, randomize_, tiny_config


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(size=8):
    torch.manual_seed(0)
    return randomize_(pcnn.PixelCNNpp(tiny_config(image_size=size))).eval()


def test_export_roundtrip_weights_only(tmp_path):
    model = _tiny()
    ck = pcnn.save(tmp_path / "m.safetensors", model)
    out = course.export_for_course(ck, tmp_path / "models" / "conditional_pixelcnn.pth")
    payload = torch.load(out, weights_only=True)  # what the course does: no pickled code
    assert payload["format"] == course.FORMAT
    assert pcnn.ModelConfig.from_dict(json.loads(payload["config"])) == model.config
    back = course.load_course_model(out)
    x = rand_images(3)
    assert torch.equal(pcnn.log_likelihoods(back, x), pcnn.log_likelihoods(model, x))


def test_get_label_matches_predict():
    model = _tiny()
    x = rand_images(5, seed=1)
    y = course.get_label(model, x, "cpu")
    assert y.dtype == torch.long and y.shape == (5,)
    assert torch.equal(y, pcnn.predict(model, x))
    # The course's dataloader: ToTensor (k/255) then (x - 0.5) * 2, off the grid by float round-off.
    k = ((x + 1) * 127.5).round()
    course_x = (k / 255 - 0.5) * 2
    assert torch.equal(course.get_label(model, course_x, "cpu"), y)


def test_my_sample_writes_25_per_class(tmp_path):
    model = _tiny()
    paths = course.my_sample(model, tmp_path / "gen", sample_batch_size=50, obs=(3, 8, 8), sample_op=None)
    names = sorted(p.name for p in paths)
    assert len(names) == 100
    assert names[0] == "Class0_image_00.png" and "Class3_image_24.png" in names
    assert (tmp_path / "gen_grid.png").is_file() and not (tmp_path / "gen" / "grid.png").exists()


def test_fallback_loads_default_path(tmp_path, monkeypatch):
    model = _tiny()
    monkeypatch.chdir(tmp_path)
    course._cache.clear()
    course.export_for_course(model)  # default models/conditional_pixelcnn.pth
    assert Path("models/conditional_pixelcnn.pth").is_file()
    x = rand_images(4, seed=2)
    y = course.get_label(torch.nn.Linear(1, 1), x, "cpu")  # not our model: ours is loaded from the file
    assert torch.equal(y, pcnn.predict(model, x))
    course._cache.clear()


def test_cli_export(tmp_path, capsys):
    model = _tiny()
    ck = pcnn.save(tmp_path / "m.safetensors", model)
    out = tmp_path / "c.pth"
    assert cli_main(["course", "export", "--checkpoint", str(ck), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)


def test_course_script_line_loads_the_export(tmp_path):
    """The course's fixed line ``model.load_state_dict(torch.load(path))`` after the student's block."""
    model = _tiny()
    out = course.export_for_course(model, tmp_path / "conditional_pixelcnn.pth")
    fresh = course.load_course_model(out)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(torch.load(out))  # the course's line, verbatim but for the path
    x = rand_images(3)
    assert torch.equal(pcnn.log_likelihoods(fresh, x), pcnn.log_likelihoods(model, x))
    # a plain state dict still loads as usual
    fresh.load_state_dict(model.state_dict())
    # an export of another model is refused with a message, not loaded by key coincidence
    other = randomize_(pcnn.PixelCNNpp(tiny_config(image_size=8, nr_logistic_mix=2))).eval()
    out2 = course.export_for_course(other, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="different model"):
        fresh.load_state_dict(torch.load(out2))


def test_my_sample_takes_guidance(tmp_path):
    """The course hook's flag: guided samples are the library's guided samples, files as usual."""
    model = _tiny()
    plain = course.my_sample(model, tmp_path / "p", obs=(3, 8, 8))
    guided = course.my_sample(model, tmp_path / "g", obs=(3, 8, 8), guidance=2.0)
    assert [p.name for p in plain] == [p.name for p in guided]
    assert any(a.read_bytes() != b.read_bytes() for a, b in zip(plain, guided))
    cut = course.my_sample(model, tmp_path / "c", obs=(3, 8, 8), guidance=2.0, plausible=0.2, schedule="ramp")
    assert any(a.read_bytes() != b.read_bytes() for a, b in zip(guided, cut))


def test_the_recommendation_travels_through_the_course_export(tmp_path):
    """export_for_course keeps the checkpoint's recommended guidance, load_course_model gives it
    back, and my_sample(..., guidance="recommended") samples with it."""
    from pcnn.sampling.guidance import METADATA_KEY, GuidanceSetting, recommended_guidance
    model = _tiny()
    rec = GuidanceSetting(2.0, "flat", 0.1, "ramp", source="results/x.json")
    ck = pcnn.save(tmp_path / "m.safetensors", model, {METADATA_KEY: rec.to_dict()})
    back = course.load_course_model(course.export_for_course(ck, tmp_path / "m.pth"))
    assert recommended_guidance(back) == rec
    a = course.my_sample(back, tmp_path / "a", obs=(3, 8, 8), guidance="recommended")
    b = course.my_sample(back, tmp_path / "b", obs=(3, 8, 8), **rec.kwargs())
    assert [x.read_bytes() for x in a] == [x.read_bytes() for x in b]
    bare = course.load_course_model(course.export_for_course(model, tmp_path / "bare.pth"))
    with pytest.raises(ValueError, match="no recommended guidance"):
        course.my_sample(bare, tmp_path / "c", obs=(3, 8, 8), guidance="recommended")
