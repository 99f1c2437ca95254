"""The course's own grading scripts run on a pcnn model (pcnn.course.grading), with a tiny model and data set."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import pcnn
from pcnn.course import grading
from pcnn.cli.main import main as cli_main
from pcnn.data.dataset import load_split
from pcnn.model.likelihood import to_float

from conftest import STARTER, data_dir, randomize_, tiny_config

DATA = data_dir()

pytestmark = pytest.mark.usefixtures("one_thread")


def _need_starter():
    if not (STARTER / grading.CLASSIFICATION_SCRIPT).is_file() or not (DATA / "validation.csv").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have the course starter at {STARTER} and the data at {DATA}")
        pytest.skip("the course starter or the data is not beside the checkout")


SCRIPT = """import x
# Begin of your code
def f():
    return 1
# End of your code
y = 2
    #Begin of your code
    model = old()
    #End of your code
z = 3
"""


def test_fill_blocks_replaces_only_the_marked_bodies():
    out = grading.fill_blocks(SCRIPT, ["from a import f", "from b import m\nmodel = m()"])
    assert out == ("import x\n# Begin of your code\nfrom a import f\n# End of your code\ny = 2\n"
                   "    #Begin of your code\n    from b import m\n    model = m()\n    #End of your code\nz = 3\n")


@pytest.mark.parametrize("blocks, msg", [(["a"], "has 2 blocks"), (["a", "b", "c"], "has 2 blocks"),
                                         (["a", "b"], None)])
def test_fill_blocks_counts_blocks(blocks, msg):
    if msg is None:
        grading.fill_blocks(SCRIPT, blocks)
        return
    with pytest.raises(ValueError, match=msg):
        grading.fill_blocks(SCRIPT, blocks)


def test_fill_blocks_rejects_an_unclosed_block():
    with pytest.raises(ValueError, match="without 'End of your code'"):
        grading.fill_blocks("a\n# Begin of your code\nb\n", ["x"])


def _outside_blocks(src: str):
    keep, inside = [], False
    for line in src.splitlines():
        if grading._END.match(line):
            inside = False
        if not inside:
            keep.append(line)
        if grading._BEGIN.match(line):
            inside = True
    return keep


def test_the_real_starter_has_the_blocks_we_fill():
    _need_starter()
    for script, blocks in ((grading.CLASSIFICATION_SCRIPT, grading.CLASSIFICATION_BLOCKS),
                           (grading.GENERATION_SCRIPT, grading.GENERATION_BLOCKS)):
        src = (STARTER / script).read_text()
        filled = grading.fill_blocks(src, blocks)
        assert filled != src
        # only the bodies of the blocks change: every line outside them survives verbatim
        assert _outside_blocks(filled) == _outside_blocks(src)


def _tiny_data(root: Path, n_val=8, n_test=12) -> Path:
    """A CPEN455-shaped folder: the first n_val validation and n_test test images of the real set."""
    for split, n in (("validation", n_val), ("test", n_test)):
        rows = (DATA / f"{split}.csv").read_text().splitlines()[:n]
        (root / split).mkdir(parents=True)
        for row in rows:
            shutil.copy(DATA / row.split(",")[0], root / row.split(",")[0])
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_grade_runs_both_course_scripts_and_agrees_with_pcnn(tmp_path):
    _need_starter()
    torch.manual_seed(0)
    model = randomize_(pcnn.PixelCNNpp(tiny_config(image_size=32, nr_filters=8)), scale=0.1).eval()
    ck = pcnn.save(tmp_path / "tiny.safetensors", model)
    data = _tiny_data(tmp_path / "data")
    res = grading.grade(STARTER, ck, data, tmp_path / "graded", threads=1, timeout=900)
    # the course's accuracy is pcnn's own prediction on the same images (the 8-bit grid is exact)
    val = load_split("validation", data, show_progress=False)
    ours = (pcnn.predict(model, to_float(val.images)) == val.labels).float().mean().item()
    assert res["classification"]["accuracy"] == pytest.approx(ours, abs=1e-9)
    gen = res["generation"]
    assert gen["images"] == 100 and gen["fid_192"] > 0
    assert sorted(p.name for p in (tmp_path / "graded" / "samples").iterdir())[0] == "Class0_image_00.png"
    # the starter's own lines are untouched: the script still loads the weights through its fixed line
    assert "model.load_state_dict(torch.load('models/conditional_pixelcnn.pth'))" in (
        tmp_path / "graded" / grading.CLASSIFICATION_SCRIPT).read_text()


def test_grade_reports_a_failing_script(tmp_path):
    _need_starter()
    starter = tmp_path / "starter"
    shutil.copytree(STARTER, starter)
    src = (starter / grading.CLASSIFICATION_SCRIPT).read_text()
    (starter / grading.CLASSIFICATION_SCRIPT).write_text(src.replace("acc = classifier(", "acc = 1 / 0 or classifier("))
    ck = pcnn.save(tmp_path / "tiny.safetensors", randomize_(pcnn.PixelCNNpp(tiny_config(image_size=32))).eval())
    data = _tiny_data(tmp_path / "data", n_val=2, n_test=2)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        grading.grade(starter, ck, data, tmp_path / "graded", generation=False, threads=1)


def test_prepare_refuses_bad_input(tmp_path):
    ck = pcnn.save(tmp_path / "tiny.safetensors", pcnn.PixelCNNpp(tiny_config()))
    with pytest.raises(FileNotFoundError, match="course starter"):
        grading.prepare(tmp_path, ck, tmp_path, tmp_path / "w")
    _need_starter()
    with pytest.raises(FileNotFoundError, match="CPEN455 data folder"):
        grading.prepare(STARTER, ck, tmp_path / "nothing", tmp_path / "w")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "x").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        grading.prepare(STARTER, ck, DATA, tmp_path / "w")


def test_prepare_names_missing_starter_imports(tmp_path, monkeypatch):
    _need_starter()
    monkeypatch.setitem(grading.STARTER_IMPORTS, "no_such_module_xyz", "no-such-package")
    ck = pcnn.save(tmp_path / "tiny.safetensors", pcnn.PixelCNNpp(tiny_config()))
    with pytest.raises(ModuleNotFoundError, match="pip install no-such-package"):
        grading.prepare(STARTER, ck, DATA, tmp_path / "w")
    assert cli_main(["course", "grade", "--starter", str(STARTER), "--checkpoint", str(ck),
                     "--data-dir", str(DATA), "--workdir", str(tmp_path / "w2")]) == 1


def test_cli_grade_writes_json(tmp_path, capsys):
    _need_starter()
    ck = pcnn.save(tmp_path / "tiny.safetensors", randomize_(pcnn.PixelCNNpp(tiny_config(image_size=32))).eval())
    data = _tiny_data(tmp_path / "data", n_val=4, n_test=2)
    out = tmp_path / "grade.json"
    assert cli_main(["course", "grade", "--starter", str(STARTER), "--checkpoint", str(ck), "--data-dir", str(data),
                     "--no-generation", "--threads", "1", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text())["classification"] == printed["classification"]
    assert "generation" not in printed



def test_generation_blocks_ask_for_guidance_only_when_set():
    assert grading.generation_blocks(0.0) == grading.GENERATION_BLOCKS
    blocks = grading.generation_blocks(1.5, "flat")
    assert blocks[0] == grading.GENERATION_BLOCKS[0]
    assert blocks[1].endswith("my_sample(model=model, gen_data_dir=gen_data_dir, guidance=1.5, guide='flat', "
                              "plausible=0.0, schedule='constant')")
    assert "guidance=2.0, guide='flat', plausible=0.0" in grading.generation_blocks(2)[1]  # the defaults, named
    assert "guide='posterior', plausible=0.1, schedule='ramp')" in grading.generation_blocks(2, "posterior", 0.1,
                                                                                             "ramp")[1]
    assert grading.generation_blocks("recommended")[1].endswith("gen_data_dir=gen_data_dir, guidance='recommended')")
    with pytest.raises(ValueError, match="guidance"):
        grading.generation_blocks(-1.0)
    with pytest.raises(ValueError, match="plausible"):
        grading.generation_blocks(1.0, plausible=3)
    with pytest.raises(ValueError, match="schedule"):
        grading.generation_blocks(1.0, schedule="sine")
    if STARTER.is_dir():
        src = (STARTER / grading.GENERATION_SCRIPT).read_text()
        filled = grading.fill_blocks(src, blocks)
        assert _outside_blocks(filled) == _outside_blocks(src) and "guidance=1.5" in filled
