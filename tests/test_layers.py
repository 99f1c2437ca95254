"""The elementwise building blocks that were rewritten for speed keep their maths."""
import pytest
import torch
import torch.nn.functional as F

from pcnn.model.layers import ByteDropout, concat_elu


def _reference_concat_elu(x):
    return F.elu(torch.cat([x, -x], dim=1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_concat_elu_matches_reference_values_and_gradients(dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 5, 4, 6, generator=g, dtype=dtype) * 3).requires_grad_()
    up = torch.randn(3, 10, 4, 6, generator=g, dtype=dtype)
    ours = concat_elu(x)
    (g_ours,) = torch.autograd.grad(ours, x, up)
    ref = _reference_concat_elu(x)
    (g_ref,) = torch.autograd.grad(ref, x, up)
    assert ours.shape == (3, 10, 4, 6)
    assert torch.equal(ours, ref)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(g_ours, g_ref, rtol=tol, atol=tol)


def test_concat_elu_gradcheck_float64():
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    x = (x + 0.05 * torch.sign(x)).requires_grad_()  # keep away from the kink at 0
    assert torch.autograd.gradcheck(concat_elu, (x,))


def test_concat_elu_without_grad_leaves_input_alone():
    x = torch.randn(2, 3, 4, 4)
    before = x.clone()
    with torch.no_grad():
        out = concat_elu(x)
    assert torch.equal(x, before)
    assert torch.equal(out, _reference_concat_elu(before))


def test_byte_dropout_keeps_expected_fraction_and_scales_exactly():
    torch.manual_seed(0)
    drop = ByteDropout(0.5).train()
    x = torch.ones(64, 32, 16, 16, requires_grad=True)
    out = drop(x)
    kept = out != 0
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    frac = kept.float().mean().item()
    assert abs(frac - 0.5) < 0.01                         # 524k draws: sd 0.0007
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, kept.float() * 2.0)          # gradient = the same mask x scale
    # Expectation preserved for a p that is not a multiple of 1/256 of the keep rate.
    d = ByteDropout(0.3).train()
    assert d.threshold == round(256 * 0.7) and d.scale == 256 / d.threshold
    y = d(torch.ones(200_000))
    assert abs(y.mean().item() - 1.0) < 0.01


def test_byte_dropout_eval_identity_seeded_and_validated():
    x = torch.randn(4, 8, 5, 5)
    drop = ByteDropout(0.5)
    assert drop.eval()(x) is x
    drop.train()
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    b = drop(x)
    assert torch.equal(a, b) and not torch.equal(a, drop(x))
    assert ByteDropout(0.0).train()(x) is x
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout probability"):
            ByteDropout(p)


def test_byte_dropout_forward_is_its_keep_mask_times_scale():
    x = torch.randn(4, 6, 5, 5)
    drop = ByteDropout(0.5).train()
    torch.manual_seed(7)
    keep = drop.keep_mask(x)
    torch.manual_seed(7)
    out = drop(x)
    assert keep.dtype == torch.bool and keep.shape == x.shape
    assert torch.equal(out, torch.where(keep, x * 2.0, torch.zeros(())))
