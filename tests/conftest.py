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
