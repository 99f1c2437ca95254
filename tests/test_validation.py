import pytest
import torch

import pcnn
from conftest import rand_images, tiny_config


@pytest.mark.parametrize("x, msg", [
    (torch.zeros(2, 1, 8, 8), r"shape \(B, 3, 8, 8\)"),
    (torch.zeros(2, 3, 16, 16), r"shape \(B, 3, 8, 8\)"),
    (torch.zeros(3, 8, 8), r"shape"),
    (torch.zeros(0, 3, 8, 8), "empty batch"),
    (torch.full((2, 3, 8, 8), 1.5), r"\[-1, 1\]"),
    (torch.full((2, 3, 8, 8), float("nan")), r"\[-1, 1\]"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "floating point"),
])
def test_bad_images(tiny, x, msg):
    y = torch.zeros(max(x.shape[0], 1), dtype=torch.long)[: x.shape[0]] if x.dim() == 4 else torch.zeros(3).long()
    with pytest.raises(ValueError, match=msg):
        tiny(x, y)
    with pytest.raises(ValueError, match=msg):
        pcnn.log_likelihoods(tiny, x)


@pytest.mark.parametrize("y, msg", [
    (torch.tensor([0, 4]), r"in \[0, 4\)"),
    (torch.tensor([-1, 0]), r"in \[0, 4\)"),
    (torch.tensor([0]), "length 2"),
    (torch.tensor([0.0, 1.0]), "integers"),
    (None, "labels are required"),
])
def test_bad_labels(tiny, y, msg):
    with pytest.raises(ValueError, match=msg):
        tiny(rand_images(2), y)


def test_config_rejects_typos_and_bad_values():
    with pytest.raises(ValueError, match="unknown fusion"):
        tiny_config(fusion="blocs")
    with pytest.raises(ValueError, match="unknown ModelConfig key"):
        pcnn.ModelConfig.from_dict({"nr_filter": 3})
    with pytest.raises(ValueError, match="multiple of 4"):
        tiny_config(image_size=10)
    with pytest.raises(ValueError, match="dropout"):
        tiny_config(dropout=1.0)
    with pytest.raises(ValueError, match="positive int"):
        tiny_config(nr_filters=0)
    assert tiny_config(fusion="blocks+first_conv").fusion == ("first_conv", "blocks")
    assert tiny_config(fusion="none").fusion == () and not tiny_config(fusion="none").conditional
    cfg = tiny_config(fusion=["late", "input"])
    assert pcnn.ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_any_batch_size_and_no_state_between_calls(tiny):
    for b in (1, 3, 17, 64, 2):
        out = tiny(rand_images(b, seed=b), torch.arange(b) % 4)
        assert out.shape == (b, 30, 8, 8)


def test_same_parameters_allows_only_dropout_to_differ():
    a = tiny_config(dropout=0.5)
    assert a.same_parameters(tiny_config(dropout=0.0)) and a.same_parameters(a)
    for other in (tiny_config(nr_filters=16), tiny_config(fusion=("blocks_film",)), tiny_config(image_size=16)):
        assert not a.same_parameters(other)
    # and the claim behind it: equal parameter shapes whatever the dropout
    sd = lambda c: {k: v.shape for k, v in pcnn.PixelCNNpp(c).state_dict().items()}  # noqa: E731
    assert sd(a) == sd(tiny_config(dropout=0.0))
