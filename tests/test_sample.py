import pytest
import torch

import pcnn
from pcnn.model.likelihood import mixture_params, quantize
from pcnn.model.likelihood import draw_noise, to_uint8


def test_reproducible_on_grid_and_uint8(tiny):
    labels = torch.tensor([0, 1, 2, 3])
    a = pcnn.sample(tiny, labels, generator=torch.Generator().manual_seed(5))
    b = pcnn.sample(tiny, labels, generator=torch.Generator().manual_seed(5))
    c = pcnn.sample(tiny, labels, generator=torch.Generator().manual_seed(6))
    assert a.dtype == torch.uint8 and a.shape == (4, 3, 8, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    f = pcnn.sample(tiny, labels, generator=torch.Generator().manual_seed(5), return_float=True)
    assert torch.equal(to_uint8(f), a)
    assert torch.equal(quantize(f), f) and f.abs().max() <= 1  # exactly on the 8-bit grid


def test_samples_follow_the_models_own_conditionals(tiny):
    """Teacher-forced check: feeding the sample back, each pixel is what the
    sampler draws from the parameters the model gives at that pixel."""
    from pcnn.model.likelihood import sample_from_params
    labels = torch.tensor([1, 2])
    x = pcnn.sample(tiny, labels, generator=torch.Generator().manual_seed(0), return_float=True)
    u_mix, u_log = draw_noise(2, 3, 8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        p = mixture_params(tiny(x, labels), 3)
    assert torch.equal(sample_from_params(p, u_mix, u_log), x)


def test_no_autograd_and_mode_restored(tiny):
    tiny.train()
    out = pcnn.sample(tiny, [0], return_float=True)
    assert not out.requires_grad and tiny.training


def test_bad_labels(tiny):
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        pcnn.sample(tiny, [0, 4])
    with pytest.raises(ValueError, match="non-empty"):
        pcnn.sample(tiny, [])
    with pytest.raises(ValueError, match="unknown sampling method"):
        pcnn.sample(tiny, [0], method="fast!")


@pytest.mark.parametrize("method", ["cached", "naive"])
def test_preview_shows_rows_forming(tiny, method):
    frames = []
    final = pcnn.sample(tiny, [0, 3], generator=torch.Generator().manual_seed(2), method=method,
                        preview=lambda rows, imgs: frames.append((rows, imgs.clone())))
    assert [r for r, _ in frames] == list(range(1, 9))
    for rows, imgs in frames:
        assert torch.equal(imgs[:, :, :rows], final[:, :, :rows])
        assert (imgs[:, :, rows:] == 128).all()  # not yet sampled: mid-grey


def test_write_sample_set_replaces_an_earlier_set(tmp_path):
    """A smaller set written into a folder that held a bigger one leaves only its own files."""
    from pcnn.sampling.sets import write_sample_set
    from conftest import randomize_, tiny_config
    torch.manual_seed(0)
    model = randomize_(pcnn.PixelCNNpp(tiny_config(image_size=4))).eval()
    write_sample_set(model, tmp_path / "s", per_class=3, show_progress=False)
    (tmp_path / "s" / "notes.txt").write_text("kept")
    paths = write_sample_set(model, tmp_path / "s", per_class=1, show_progress=False)
    assert sorted(p.name for p in (tmp_path / "s").glob("*.png")) == sorted(p.name for p in paths)
    assert len(paths) == 4 and (tmp_path / "s" / "notes.txt").exists()


def test_make_grid_pads_a_lone_image_like_a_grid():
    from pcnn.sampling.sets import make_grid
    imgs = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    one, two = make_grid(imgs[:1], nrow=1), make_grid(imgs, nrow=2)
    assert one.shape == (3, 8, 8) and two.shape == (3, 8, 14)
    assert int(one[:, 0].min()) == 255 and int(one[:, 2:6, 2:6].max()) == 0
