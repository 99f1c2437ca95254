"""The command line, end to end on a tiny model and a tiny on-disk data set."""
import csv
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

import pcnn
from pcnn.cli.main import main
from conftest import randomize_, tiny_config


@pytest.fixture
def ckpt(tmp_path):
    model = randomize_(pcnn.PixelCNNpp(tiny_config(image_size=32, nr_filters=4)))
    return pcnn.save(tmp_path / "tiny.safetensors", model)


def test_classify_labelled_and_test_split(fake_data, ckpt, tmp_path, capsys):
    out = tmp_path / "val.csv"
    assert main(["classify", "--checkpoint", str(ckpt), "--split", "validation", "--data-dir", str(fake_data),
                 "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 6 and 0 <= res["accuracy"] <= 1 and len(res["confusion_matrix"]) == 4
    rows = list(csv.reader(open(out)))
    assert rows[0] == ["id", "label", "loglik_0", "loglik_1", "loglik_2", "loglik_3"] and len(rows) == 7
    # The CSV's numbers are the library's.
    from pcnn.data.dataset import load_split
    from pcnn.model.likelihood import to_float
    ll = pcnn.log_likelihoods(pcnn.load(ckpt), to_float(load_split("validation", fake_data).images))
    assert [int(r[1]) for r in rows[1:]] == ll.argmax(1).tolist()
    assert float(rows[1][2]) == pytest.approx(ll[0, 0].item(), abs=1e-5)

    assert main(["classify", "--checkpoint", str(ckpt), "--split", "test", "--data-dir", str(fake_data),
                 "--out", str(tmp_path / "test.csv"), "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "accuracy" not in res and len(list(csv.reader(open(tmp_path / "test.csv")))) == 4


def test_classify_compile_flag_gives_the_eager_numbers(fake_data, ckpt, tmp_path, capsys, monkeypatch):
    """``--compile default`` scores through torch.compile (dynamo's eager backend here, to stay
    quick; tests/test_scoring_compile.py runs inductor) and writes the eager model's numbers."""
    import torch._dynamo
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, mode=None, dynamic=None: real(m, backend="eager", dynamic=dynamic))
    torch._dynamo.reset()
    outs = {}
    for mode in ("off", "default"):
        outs[mode] = tmp_path / f"{mode}.csv"
        assert main(["classify", "--checkpoint", str(ckpt), "--data-dir", str(fake_data), "--out", str(outs[mode]),
                     "--quiet", "--device", "cpu", "--batch-size", "5", "--compile", mode]) == 0
        assert json.loads(capsys.readouterr().out)["compile"] == mode
    torch._dynamo.reset()
    a, b = (list(csv.reader(open(outs[m])))[1:] for m in ("off", "default"))
    assert [r[1] for r in a] == [r[1] for r in b]
    assert [float(v) for r in b for v in r[2:]] == pytest.approx([float(v) for r in a for v in r[2:]], rel=1e-6)
    with pytest.raises(SystemExit):
        main(["classify", "--checkpoint", str(ckpt), "--data-dir", str(fake_data), "--compile", "max"])
    assert "invalid choice: 'max'" in capsys.readouterr().err


def test_sample_writes_course_named_pngs_and_grid(ckpt, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["sample", "--checkpoint", str(ckpt), "--per-class", "2", "--out", str(out), "--quiet",
                 "--class", "panda", "--class", "3", "--seed", "1"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["Class1_image_00.png", "Class1_image_01.png", "Class3_image_00.png",
                     "Class3_image_01.png"]
    assert (tmp_path / "samples_grid.png").is_file()
    assert Image.open(out / "Class1_image_00.png").size == (32, 32)
    # Same seed, same images.
    assert main(["sample", "--checkpoint", str(ckpt), "--per-class", "2", "--out", str(tmp_path / "again"),
                 "--quiet", "--class", "panda", "--class", "3", "--seed", "1"]) == 0
    assert (out / "Class3_image_01.png").read_bytes() == (tmp_path / "again" / "Class3_image_01.png").read_bytes()


def test_errors_are_messages_not_tracebacks(ckpt, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(ckpt), "--class", "giraffe", "--out", str(tmp_path)]) == 2
    assert "unknown class 'giraffe'" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
    assert main(["classify", "--checkpoint", str(tmp_path / "bad.safetensors"), "--data-dir", str(tmp_path)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_module_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "pcnn", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for cmd in ("classify", "sample", "train", "data", "fid", "course", "demo"):
        assert cmd in r.stdout


def test_sample_and_complete_take_guidance(ckpt, tmp_path, capsys):
    """--guidance w samples with class guidance (other images than w = 0, the setting echoed);
    a bad w is one error line."""
    base = ["sample", "--checkpoint", str(ckpt), "--per-class", "1", "--quiet", "--class", "koala", "--seed", "2"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "b"), "--guidance", "4", "--guide", "flat"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["guidance"] == 4.0 and res["guide"] == "flat"
    a = (tmp_path / "a" / "Class2_image_00.png").read_bytes()
    assert a != (tmp_path / "b" / "Class2_image_00.png").read_bytes()
    ref = pcnn.sample(pcnn.load(ckpt), [2], generator=torch.Generator().manual_seed(2), guidance=4.0, guide="flat")
    got = torch.from_numpy(__import__("numpy").array(Image.open(tmp_path / "b" / "Class2_image_00.png"))).permute(2, 0, 1)
    assert torch.equal(got, ref[0])
    assert main(base + ["--out", str(tmp_path / "c"), "--guidance", "-1"]) == 2
    assert "guidance" in capsys.readouterr().err
    img = tmp_path / "in.png"
    Image.fromarray(torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy()).save(img)
    assert main(["complete", "--checkpoint", str(ckpt), "--image", str(img), "--keep-rows", "20", "--class", "pizza",
                 "--guidance", "2", "--out", str(tmp_path / "c.png")]) == 0
    assert json.loads(capsys.readouterr().out)["guidance"] == 2.0 and (tmp_path / "c.png").is_file()


def test_cli_plausible_schedule_and_recommended(ckpt, tmp_path, capsys):
    """--plausible and --schedule reach the sampler; --guidance recommended reads the checkpoint's
    metadata (and is an error line for a checkpoint without it); bad values are one error line."""
    from pcnn.sampling.guidance import METADATA_KEY, GuidanceSetting
    base = ["sample", "--per-class", "1", "--quiet", "--class", "panda", "--seed", "5"]
    assert main(base + ["--checkpoint", str(ckpt), "--out", str(tmp_path / "a"), "--guidance", "3",
                        "--plausible", "0.1", "--schedule", "interval:0:20"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["guidance"], res["plausible"], res["schedule"]) == (3.0, 0.1, "interval:0:20")
    ref = pcnn.sample(pcnn.load(ckpt), [1], generator=torch.Generator().manual_seed(5), guidance=3.0, plausible=0.1,
                      schedule="interval:0:20")
    got = torch.from_numpy(__import__("numpy").array(Image.open(tmp_path / "a" / "Class1_image_00.png"))).permute(2, 0, 1)
    assert torch.equal(got, ref[0])
    rec = GuidanceSetting(3.0, "flat", 0.1, "interval:0:20", source="results/x.json")
    with_rec = pcnn.save(tmp_path / "r.safetensors", pcnn.load(ckpt), {METADATA_KEY: rec.to_dict()})
    assert main(base + ["--checkpoint", str(with_rec), "--out", str(tmp_path / "b"), "--guidance", "recommended"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["guidance"], res["guide"], res["plausible"], res["schedule"]) == (3.0, "flat", 0.1, "interval:0:20")
    assert res["guidance_from"].startswith("checkpoint metadata")
    assert (tmp_path / "b" / "Class1_image_00.png").read_bytes() == (tmp_path / "a" / "Class1_image_00.png").read_bytes()
    assert main(base + ["--checkpoint", str(ckpt), "--out", str(tmp_path / "c"), "--guidance", "recommended"]) == 2
    assert "no recommended guidance" in capsys.readouterr().err
    for bad, word in ((["--plausible", "1.5"], "plausible"), (["--schedule", "interval:9"], "interval"),
                      (["--schedule", "interval:0:40"], "STOP must be at most 32")):
        assert main(base + ["--checkpoint", str(ckpt), "--out", str(tmp_path / "d"), "--guidance", "2"] + bad) == 2
        assert word in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--checkpoint", str(ckpt), "--out", str(tmp_path / "d"), "--guidance", "best"])
