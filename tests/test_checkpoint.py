import pytest
import torch

import pcnn
from conftest import rand_images, randomize_, tiny_config


def test_round_trip_is_bit_exact(tmp_path):
    m = randomize_(pcnn.PixelCNNpp(tiny_config(fusion="first_conv+blocks_film+late"))).eval()
    path = pcnn.save(tmp_path / "m.safetensors", m, metadata={"epoch": 3})
    m2 = pcnn.load(path)
    assert m2.config == m.config and not m2.training
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x, y = rand_images(2), torch.tensor([0, 3])
    assert torch.equal(m(x, y), m2(x, y))
    assert pcnn.read_metadata(path) == {"epoch": 3}
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_truncated_and_corrupt_files(tmp_path):
    m = pcnn.PixelCNNpp(tiny_config())
    path = pcnn.save(tmp_path / "m.safetensors", m)
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(pcnn.CheckpointError, match="truncated or corrupt"):
        pcnn.load(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(pcnn.CheckpointError, match="truncated or corrupt"):
        pcnn.load(tmp_path / "junk.safetensors")
    with pytest.raises(pcnn.CheckpointError, match="does not exist"):
        pcnn.load(tmp_path / "missing.safetensors")


def test_wrong_config_and_foreign_file(tmp_path):
    from safetensors.torch import save_file
    m = pcnn.PixelCNNpp(tiny_config())
    path = pcnn.save(tmp_path / "m.safetensors", m)
    with pytest.raises(pcnn.CheckpointError, match="is for config"):
        pcnn.load(path, config=tiny_config(nr_filters=16))
    # Weights of one config under the header of another.
    state = {k: v.contiguous() for k, v in m.state_dict().items()}
    other = tiny_config(nr_filters=16).to_json()
    save_file(state, str(tmp_path / "bad.safetensors"), metadata={"format": "pcnn-model-v1", "config": other})
    with pytest.raises(pcnn.CheckpointError, match="does not fit its config"):
        pcnn.load(tmp_path / "bad.safetensors")
    save_file(state, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(pcnn.CheckpointError, match="not a pcnn model checkpoint"):
        pcnn.load(tmp_path / "foreign.safetensors")


def test_update_metadata_keeps_the_weights_and_the_loaded_model_carries_the_metadata(tmp_path):
    from pcnn.model.checkpoint import read_metadata, update_metadata
    torch.manual_seed(0)
    model = pcnn.PixelCNNpp(tiny_config()).eval()
    path = pcnn.save(tmp_path / "m.safetensors", model, {"epoch": 3, "note": "x"})
    assert pcnn.load(path).checkpoint_metadata == {"epoch": 3, "note": "x"}
    update_metadata(path, {"recommended_guidance": {"w": 2.0}, "note": None})
    assert read_metadata(path) == {"epoch": 3, "recommended_guidance": {"w": 2.0}}
    back = pcnn.load(path)
    assert back.checkpoint_metadata == read_metadata(path) and back.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
    with pytest.raises(pcnn.CheckpointError):
        update_metadata(tmp_path / "missing.safetensors", {"a": 1})
