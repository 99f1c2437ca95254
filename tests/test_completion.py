"""Sampling temperature and class-conditional completion (tiny models, 8x8 images)."""
import math

import pytest
import torch

import pcnn
from pcnn.model.likelihood import MixtureParams, mixture_params, sample_from_params
from pcnn.model.likelihood import draw_noise
from pcnn.sampling.sets import write_sample_set

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: no OpenMP contention

METHODS = ["cached", "naive"]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _untempered_draw(p, u_mix, u_log):
    """The sampler's arithmetic as it was before temperature existed (reference for T = 1)."""
    u_mix = u_mix.clamp(1e-5, 1 - 1e-5)
    u = u_log.clamp(1e-5, 1 - 1e-5)
    k = torch.argmax(p.logits - torch.log(-torch.log(u_mix)), dim=1, keepdim=True)
    pick = lambda t: torch.gather(t, 2, k[:, None].expand(-1, 3, -1, -1, -1))[:, :, 0]  # noqa: E731
    mean, log_s, c = pick(p.means), pick(p.log_scales), pick(p.coeffs)
    noise = torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))
    q = lambda v: torch.round((v.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1  # noqa: E731
    r = q(mean[:, 0] + noise[:, 0])
    g = q(mean[:, 1] + c[:, 0] * r + noise[:, 1])
    b = q(mean[:, 2] + c[:, 1] * r + c[:, 2] * g + noise[:, 2])
    return torch.stack([r, g, b], dim=1)


def _teacher_forced(model, x, labels, seed, temperature):
    """What the sampler must have drawn at every pixel of x, from the model's outputs on x itself."""
    u_mix, u_log = draw_noise(x.shape[0], model.config.nr_logistic_mix, model.config.image_size, _gen(seed))
    with torch.no_grad():
        p = mixture_params(model(x, torch.as_tensor(labels)), model.config.nr_logistic_mix)
    return p, u_mix, u_log


@pytest.mark.parametrize("method", METHODS)
def test_temperature_one_is_bitwise_the_untempered_sampler(tiny, method):
    labels = [0, 1, 2, 3]
    x = pcnn.sample(tiny, labels, generator=_gen(4), method=method, temperature=1.0, return_float=True)
    assert torch.equal(x, pcnn.sample(tiny, labels, generator=_gen(4), method=method, return_float=True))
    p, u_mix, u_log = _teacher_forced(tiny, x, labels, 4, 1.0)
    assert torch.equal(_untempered_draw(p, u_mix, u_log), x)          # the pre-temperature arithmetic
    assert torch.equal(sample_from_params(p, u_mix, u_log, 1.0), x)


@pytest.mark.parametrize("method", METHODS)
def test_temperature_divides_logits_and_multiplies_scales(tiny, method):
    t = 0.6
    labels = [3, 2, 1, 0]
    x = pcnn.sample(tiny, labels, generator=_gen(5), method=method, temperature=t, return_float=True)
    p, u_mix, u_log = _teacher_forced(tiny, x, labels, 5, t)
    tempered = MixtureParams(p.logits / t, p.means, p.log_scales + math.log(t), p.coeffs)
    drawn = _untempered_draw(tempered, u_mix, u_log)
    assert (drawn != x).float().mean() < 0.01     # same draw up to exp(log s + log t) vs exp(log s) * t
    assert not torch.equal(x, pcnn.sample(tiny, labels, generator=_gen(5), method=method, return_float=True))


def test_low_temperature_concentrates_the_samples(tiny):
    # per-image pixel spread around the image mean shrinks as T falls (scales * T, sharper mixture)
    spread = [pcnn.sample(tiny, [1] * 6, generator=_gen(0), temperature=t, return_float=True).std().item()
              for t in (1.0, 0.3, 0.05)]
    assert spread[0] > spread[1] > spread[2]


def test_cached_and_naive_agree_at_a_temperature(tiny):
    a = pcnn.sample(tiny, [0, 1, 2, 3, 1], generator=_gen(3), method="cached", temperature=0.8)
    b = pcnn.sample(tiny, [0, 1, 2, 3, 1], generator=_gen(3), method="naive", temperature=0.8)
    assert (a != b).float().mean() < 0.01   # float reassociation only; measured 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "warm"])
def test_bad_temperature_is_a_clear_error(tiny, method, bad):
    with pytest.raises(ValueError, match="temperature must be"):
        pcnn.sample(tiny, [0], method=method, temperature=bad)
    img = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="temperature must be"):
        pcnn.complete(tiny, img, [0], 2, method=method, temperature=bad)


def test_sample_set_passes_temperature(tiny, tmp_path):
    with pytest.raises(ValueError, match="temperature must be"):
        write_sample_set(tiny, tmp_path / "s", per_class=1, temperature=0, show_progress=False)
    a = write_sample_set(tiny, tmp_path / "a", per_class=1, temperature=0.5, show_progress=False)
    b = write_sample_set(tiny, tmp_path / "b", per_class=1, temperature=1.0, show_progress=False)
    assert [p.read_bytes() for p in a] != [p.read_bytes() for p in b]


# ------------------------------------------------------------------------- completion


@pytest.fixture
def images(tiny):
    return pcnn.sample(tiny, [0, 1, 2, 3], generator=_gen(11))


@pytest.mark.parametrize("keep", [1, 3, 5])
def test_kept_rows_unchanged_and_cached_equals_naive(tiny, images, keep):
    labels = [3, 2, 1, 0]
    a = pcnn.complete(tiny, images, labels, keep, generator=_gen(2), method="cached")
    b = pcnn.complete(tiny, images, labels, keep, generator=_gen(2), method="naive")
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a[:, :, :keep], images[:, :, :keep]) and torch.equal(b[:, :, :keep], images[:, :, :keep])
    assert (a != b).float().mean() < 0.01   # float reassociation only; measured 0
    assert not torch.equal(a[:, :, keep:], images[:, :, keep:])


@pytest.mark.parametrize("method", METHODS)
def test_completion_samples_the_models_conditionals_given_the_kept_rows(tiny, images, method):
    """Teacher-forced: every sampled pixel is what the sampler draws from the model's
    output on the completed image, so the rows after the kept ones really see them."""
    keep, labels = 4, [1, 1, 3, 0]
    x = pcnn.complete(tiny, images, labels, keep, generator=_gen(7), method=method, temperature=0.9,
                      return_float=True)
    p, u_mix, u_log = _teacher_forced(tiny, x, labels, 7, 0.9)
    drawn = sample_from_params(p, u_mix, u_log, 0.9)
    assert torch.equal(drawn[:, :, keep:], x[:, :, keep:])


@pytest.mark.parametrize("method", METHODS)
def test_keep_rows_zero_is_sample_and_all_rows_is_the_image(tiny, images, method):
    labels = [2, 0, 3, 1]
    assert torch.equal(pcnn.complete(tiny, images, labels, 0, generator=_gen(9), method=method),
                       pcnn.sample(tiny, labels, generator=_gen(9), method=method))
    assert torch.equal(pcnn.complete(tiny, images, labels, 8, generator=_gen(9), method=method), images)


def test_completion_as_every_class_shares_the_noise(tiny, images):
    out = pcnn.complete_as_every_class(tiny, images[:2], 3, seed=5)
    assert out.shape == (2, 4, 3, 8, 8)
    for c in range(4):
        assert torch.equal(out[:, c], pcnn.complete(tiny, images[:2], [c, c], 3, generator=_gen(5)))
    assert torch.equal(out[:, :, :, :3], images[:2, None, :, :3].expand(-1, 4, -1, -1, -1))


def test_completion_errors(tiny, images):
    for bad in (-1, 9, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"keep_rows must be an integer in \[0, 8\]"):
            pcnn.complete(tiny, images, [0, 1, 2, 3], bad)
    with pytest.raises(ValueError, match=r"shape \(B, 3, 8, 8\)"):
        pcnn.complete(tiny, torch.zeros(2, 3, 16, 16, dtype=torch.uint8), [0, 1], 2)
    with pytest.raises(ValueError, match=r"shape \(B, 3, 8, 8\)"):
        pcnn.complete(tiny, torch.zeros(3, 8, 8, dtype=torch.uint8), [0], 2)
    with pytest.raises(ValueError, match="must be uint8"):
        pcnn.complete(tiny, images.float() / 127.5 - 1, [0, 1, 2, 3], 2)
    with pytest.raises(ValueError, match="one label per image"):
        pcnn.complete(tiny, images, [0, 1], 2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        pcnn.complete(tiny, images, [0, 1, 2, 7], 2)
