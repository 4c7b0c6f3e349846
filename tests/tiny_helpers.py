"""Helpers shared by the cache / train / sample tests (the `cache` fixture built on them lives in conftest.py)."""
from safetensors.torch import load_file

from medsora.checkpoint import latest_checkpoint
from medsora.config import load_config


def tiny_cfg(root, *extra):
    """The `tiny` preset on `root`, 8-frame clips, alignment off, a log line every step; `extra` overrides."""
    return load_config("tiny", overrides=[f"data.root={root}", "data.num_frames=8", "data.frame_stride=2",
                                          "data.clip_offsets=2", "train.align=false", "train.log_every=1", *extra])


def params(run_dir, name="model.safetensors"):
    """The weights in the newest checkpoint of `run_dir`."""
    return load_file(latest_checkpoint(run_dir) / name)
