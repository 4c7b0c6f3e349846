import pytest


@pytest.fixture(scope="session")
def synth_mp4(tmp_path_factory):
    """4 synthetic endoscopy mp4 videos of 40 frames at 64 px (deterministic)."""
    from medsora.data.synth import write_dataset

    out = tmp_path_factory.mktemp("synth_mp4")
    write_dataset(out, videos=4, seed=0, frames=40, size=64, fmt="mp4")
    return out


@pytest.fixture(scope="session")
def synth_frames(tmp_path_factory):
    """3 synthetic videos as folders of PNG frames, nested one level down."""
    from medsora.data.synth import write_dataset

    out = tmp_path_factory.mktemp("synth_frames")
    write_dataset(out / "nested", videos=3, seed=1, frames=40, size=64, fmt="frames")
    return out


def _saved_bytes(fn, module):
    """Run fn() and count the bytes autograd keeps for the backward: distinct storages, `module`'s weights
    excluded. Returns (fn's result, bytes)."""
    import torch

    storages, weights = {}, {p.untyped_storage().data_ptr() for p in module.parameters()}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


@pytest.fixture
def saved_bytes():
    """`saved_bytes(fn, module) -> (result, bytes)`: what autograd keeps for the backward of fn()."""
    return _saved_bytes
