import numpy as np
import pytest
import torch

import pcnn
from pcnn.model.likelihood import nll
from conftest import rand_images, randomize_, tiny_config


def per_class_loop(model, x):
    with torch.no_grad():
        cols = [-nll(x, model(x, torch.full((x.shape[0],), c)), model.config.nr_logistic_mix)
                for c in range(model.config.num_classes)]
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("b", [1, 3, 17, 64])
def test_batched_equals_per_class_loop(tiny, b):
    x = rand_images(b, seed=b)
    ll = pcnn.log_likelihoods(tiny, x, batch_size=b)   # one chunk holds one class: same shapes as the loop
    assert ll.shape == (b, 4)
    assert torch.equal(ll, per_class_loop(tiny, x))
    # Chunking differently changes nothing beyond float reassociation of the convolutions.
    assert torch.allclose(pcnn.log_likelihoods(tiny, x, batch_size=7), ll, rtol=1e-5, atol=1e-3)


def test_flip_average_and_predict(tiny):
    x = rand_images(5, seed=1)
    a, b = pcnn.log_likelihoods(tiny, x), pcnn.log_likelihoods(tiny, x.flip(-1))
    assert torch.allclose(pcnn.log_likelihoods(tiny, x, flip_average=True), (a + b) / 2, atol=1e-4)
    assert torch.equal(pcnn.predict(tiny, x), a.argmax(1))
    assert torch.equal(pcnn.predict(log_liks=a), a.argmax(1))


def test_restores_training_mode_and_builds_no_graph(tiny):
    tiny.train()
    ll = pcnn.log_likelihoods(tiny, rand_images(2))
    assert tiny.training
    assert not ll.requires_grad and ll.grad_fn is None  # scoring must not keep autograd graphs


def test_posterior():
    ll = torch.tensor([[-10.0, -11.0, -12.0, -13.0], [0.0, 0.0, 0.0, 0.0]])
    p = pcnn.posterior(ll)
    assert torch.allclose(p.sum(1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(p[1], torch.full((4,), 0.25, dtype=torch.float64))
    q = pcnn.posterior(ll, prior=[1, 0, 0, 0])
    assert torch.allclose(q[:, 0], torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="prior"):
        pcnn.posterior(ll, prior=[1, 2])


def test_metrics_by_hand():
    m = pcnn.metrics([0, 0, 1, 2, 3, 3], [0, 1, 1, 2, 3, 0], 4)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * 1 * 0.5 / 1.5, 1.0, 2 * 1 * 0.5 / 1.5]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["per_class_accuracy"] == [0.5, 1.0, 1.0, 0.5]
    with pytest.raises(ValueError):
        pcnn.metrics([], [], 4)


def test_unconditional_model_scores_one_column():
    from conftest import tiny_config
    m = pcnn.PixelCNNpp(tiny_config(fusion="none")).eval()
    assert pcnn.log_likelihoods(m, rand_images(3)).shape == (3, 1)


def test_class_pair_outputs_order_chunks_and_mode():
    """Every (view, class, image) pair exactly once, image fastest; chunks never exceed the batch;
    the model's mode is restored; outputs equal one forward per class."""
    from pcnn.model.classify import class_pair_outputs
    torch.manual_seed(0)
    model = randomize_(pcnn.PixelCNNpp(tiny_config())).train()
    x = rand_images(3)
    views = torch.stack([x, x.flip(-1)])
    seen, calls = [], []
    for v, c, i, imgs, out in class_pair_outputs(model, views, 5, progress=lambda d, t: calls.append((d, t))):
        assert len(v) <= 5 and out.dtype == torch.float32
        for k in range(len(v)):
            seen.append((int(v[k]), int(c[k]), int(i[k])))
            with torch.no_grad():
                model.eval()
                ref = model(views[v[k], i[k]][None], torch.tensor([int(c[k])]))
                model.train()
            assert torch.allclose(out[k], ref[0], atol=1e-5)
            assert torch.equal(imgs[k], views[v[k], i[k]])
    assert seen == [(v, c, i) for v in range(2) for c in range(4) for i in range(3)]
    assert calls[-1] == (24, 24) and len(calls) == 5 and model.training


def test_calibration_ece_by_hand():
    from pcnn.eval.classification import calibration
    from pcnn.model.classify import posterior
    # Four images, two classes: confidences 0.5+, known by construction.
    ll = torch.log(torch.tensor([[0.93, 0.07], [0.62, 0.38], [0.25, 0.75], [0.55, 0.45]], dtype=torch.float64))
    labels = torch.tensor([0, 1, 1, 0])
    cal = calibration(ll, labels, bins=5)  # edges 0.5, 0.6, 0.7, 0.8, 0.9, 1.0
    assert [b["count"] for b in cal["bins"]] == [1, 1, 1, 0, 1]
    conf = posterior(ll).max(1).values
    correct = torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert cal["bins"][0]["confidence"] == pytest.approx(0.55) and cal["bins"][1]["accuracy"] == 0.0
    expect = sum(abs(float(correct[i]) - float(conf[i])) for i in range(4)) / 4  # one image per filled bin
    assert cal["ece"] == pytest.approx(expect) and cal["bins"][3]["accuracy"] is None
    perfect = calibration(torch.log(torch.tensor([[1.0, 1e-12]] * 3)), torch.tensor([0, 0, 0]), bins=4)
    assert perfect["ece"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        calibration(ll, labels, bins=0)
