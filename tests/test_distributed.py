"""Scale-out and resilience through the CLI: 2 processes (gloo) == 1 process; SIGKILL + --resume auto ==
uninterrupted, with 1 and 2 processes."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from medsora.cache import build_cache
from medsora.checkpoint import latest_checkpoint
from medsora.config import load_config
from medsora.vae.autoencoder import VideoVAE

ARGS = ["--preset", "tiny", "data.num_frames=8", "data.frame_stride=2", "data.clip_offsets=2", "train.align=false",
        "train.log_every=1",
        "model.attn_dropout=0"]   # dropout masks are drawn per process: off, so 1 and 2 processes can agree


@pytest.fixture(scope="module")
def cache(synth_mp4, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_cache")
    cfg = load_config("tiny", overrides=[f"data.root={synth_mp4}", "data.num_frames=8", "data.frame_stride=2",
                                         "data.clip_offsets=2"])
    build_cache(cfg, VideoVAE.tiny(seed=0).eval(), out, progress=False)
    return out


def launcher(nproc):
    if nproc == 1:
        return [sys.executable, "-m", "medsora.cli"]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port",
            str(random.randint(20000, 40000)), "-m", "medsora.cli"]


def cli(*args, nproc=1, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([*launcher(nproc), *args], env=env, capture_output=True, text=True, timeout=600)


def weights(run_dir, name="model.safetensors"):
    return load_file(latest_checkpoint(run_dir) / name)


@pytest.mark.parametrize("option", [[], ["model.first_frame=true", "train.first_frame_prob=0.5"]],
                         ids=["paper", "first_frame"])
def test_two_processes_equal_one(cache, tmp_path, same_training, option):
    """Also with first-frame conditioning on: its dropout draws are made for the global batch (issue #18)."""
    common = ["train", "--cache", str(cache), *ARGS, "train.batch_size=4", "train.max_steps=5", "train.epochs=10",
              *option]
    one = cli(*common, "--run-dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = cli(*common, "--run-dir", str(tmp_path / "two"), nproc=2)
    assert two.returncode == 0, two.stderr[-2000:]
    same_training(tmp_path / "one", tmp_path / "two", load_config("tiny").train.lr,
                  names=("model.safetensors", "ema.safetensors"))
    # the weights did move: the comparison is not between two untouched initialisations
    from medsora.models.medsora import build_model

    init = build_model(load_config("tiny").model).state_dict()
    trained = weights(tmp_path / "two")
    assert any(not torch.equal(trained[k], init[k]) for k in trained if "adaLN" in k)
    if option:
        assert trained["cond_embedder.proj.weight"].abs().max() > 0        # the condition path trained too


@pytest.mark.parametrize("nproc", [1, 2])
def test_sigkill_then_resume_is_bit_identical(cache, tmp_path, nproc):
    common = ["train", "--cache", str(cache), *ARGS, "train.batch_size=2", "train.max_steps=40", "train.epochs=100",
              "train.ckpt_every=3"]
    ref = cli(*common, "--run-dir", str(tmp_path / "ref"), nproc=nproc)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    kill_at = random.Random(nproc).randint(8, 30)
    proc = subprocess.Popen([*launcher(nproc), *common, "--run-dir", str(run)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count('"loss"') >= kill_at:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)                   # the launcher and every training process
    proc.wait()
    assert latest_checkpoint(run) is not None
    resumed = cli(*common, "--run-dir", str(run), "--resume", "auto", nproc=nproc)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = weights(tmp_path / "ref", name), weights(run, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_two_processes_sample_what_one_does(cache, tmp_path):
    """`medsora sample` under torchrun: each process takes every other batch (uneven here: 3 batches), and the
    videos and latents are those of one process, bit for bit; the same for `--reconstruct`."""
    run = tmp_path / "run"
    done = cli("train", "--cache", str(cache), *ARGS, "train.batch_size=2", "train.max_steps=2", "--run-dir", str(run))
    assert done.returncode == 0, done.stderr[-2000:]
    VideoVAE.tiny(seed=0).save_pretrained(tmp_path / "vae")     # the VAE the cache was built with
    # the stochastic DPM-Solver++ SDE: its noise too must be that of the batch, not of the process
    common = ["sample", str(run), "--num-videos", "5", "--batch-size", "2", "--steps", "3", "--vae", str(tmp_path / "vae"),
              "--sampler", "dpmpp-2m-sde"]
    for name, nproc in (("one", 1), ("two", 2)):
        res = cli(*common, "--out", str(tmp_path / name), nproc=nproc)
        assert res.returncode == 0, res.stderr[-2000:]
        if nproc == 2:                                          # the work was split, not done twice
            assert "process 0 of 2 samples batches [0, 2] of 3" in res.stderr
            assert "process 1 of 2 samples batches [1] of 3" in res.stderr
        rec = cli(*common, "--reconstruct", "3", "--out", str(tmp_path / f"rec-{name}"), nproc=nproc)
        assert rec.returncode == 0, rec.stderr[-2000:]
    a, b = (load_file(tmp_path / n / "latents.safetensors")["latents"] for n in ("one", "two"))
    assert a.shape[0] == 5 and torch.equal(a, b)
    for prefix in ("", "rec-"):
        names = {n: sorted(p.name for p in (tmp_path / f"{prefix}{n}").iterdir()) for n in ("one", "two")}
        assert names["one"] == names["two"] and not any(x.startswith(".") for x in names["two"])
        for f in names["one"]:
            if f.endswith(".mp4"):
                assert (tmp_path / f"{prefix}one" / f).read_bytes() == (tmp_path / f"{prefix}two" / f).read_bytes()


def test_two_processes_cache_what_one_does(synth_mp4, tmp_path):
    """`medsora cache` under torchrun: the processes share the shards (3 of them: process 0 takes two), process 0
    writes the manifest; the cache equals a one-process cache, tensor for tensor."""
    VideoVAE.tiny(seed=0).save_pretrained(tmp_path / "vae")
    opts = ["--preset", "tiny", f"data.root={synth_mp4}", "data.num_frames=8", "data.frame_stride=2",
            "data.clip_offsets=2", f"vae.path={tmp_path / 'vae'}", "--shard-size", "3"]
    for name, nproc in (("one", 1), ("two", 2)):
        res = cli("cache", "--out", str(tmp_path / name), *opts, nproc=nproc)
        assert res.returncode == 0, res.stderr[-2000:]
        if nproc == 2:                                          # the work was split, not done twice
            assert "process 0 of 2 encodes shards [0, 2]" in res.stderr
            assert "process 1 of 2 encodes shards [1]" in res.stderr
    one, two = (json.loads((tmp_path / n / "manifest.json").read_text()) for n in ("one", "two"))
    # the recorded file digests differ: safetensors writes its metadata in hash-map order, which varies per process
    assert one.pop("files").keys() == two.pop("files").keys()
    assert one == two and list(one["shards"]) == [f"shard-0000{k}.safetensors" for k in range(3)]
    names = sorted(p.name for p in (tmp_path / "two").iterdir() if p.name != ".lock")   # .lock: see runlock.py
    assert names == ["manifest.json", *one["shards"]]
    for shard in one["shards"]:
        a, b = (load_file(tmp_path / n / shard) for n in ("one", "two"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_evaluate_what_one_does(tmp_path, write_metric_weights):
    """`medsora eval` under torchrun: each process extracts features of every other clip; the Fréchet statistics
    are merged and per-clip values put back in order (IS's splits depend on it), so every metric equals one
    process's (random I3D, VideoMAE, Inception and CLIP written here; 3 clips per set, so the split is uneven)."""
    from test_metrics_eval import _he_init_

    from medsora.data.synth import make_video, video_seed
    from medsora.data.video import write_frames
    from medsora.metrics.i3d import InceptionI3d

    weights = tmp_path / "weights"
    weights.mkdir()
    write_metric_weights(weights, inception=True)
    torch.save(_he_init_(InceptionI3d()).state_dict(), weights / "rgb_imagenet.pt")
    for name, base in (("real", 0), ("fake", 100)):
        for i in range(3):
            write_frames(tmp_path / name / f"v{i}", make_video(video_seed(base, i), frames=16, size=32))
    results = {}
    for nproc in (1, 2):
        out = tmp_path / f"eval-{nproc}.json"
        res = cli("eval", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--real-stride", "1",
                  "--metrics", "fvd,cdfvd,fid,is,fc", "--num-clips", "64", "--weights", str(weights), "--out", str(out), nproc=nproc,
                  env={"HOME": str(tmp_path / "home")})          # the real-statistics cache starts empty
        assert res.returncode == 0, res.stderr[-2000:]
        if nproc == 2:
            assert "process 0 of 2 evaluates 2 of 3 generated clips" in res.stderr
            assert "process 1 of 2 evaluates 1 of 3 generated clips" in res.stderr
        results[nproc] = json.loads(out.read_text())
    one, two = (results[n]["metrics"] for n in (1, 2))
    assert one["fc"]["value"] == two["fc"]["value"]
    assert (one["is"]["value"], one["is"]["std"]) == (two["is"]["value"], two["is"]["std"]) and one["is"]["std"] > 0
    for m in ("fvd", "cdfvd", "fid"):
        assert one[m]["value"] > 1e-3                                # random features of unlike sets
        # merged float64 statistics, then the matrix square root: the distances agree to ~1e-10 (a wrongly
        # merged covariance or mean moves them by their own size)
        # (FVD to 1e-5: I3D's 3D convolutions round a clip alone differently from one in a batch of 3 on the CPU:
        # features differ by ~3e-6, measured; the others to 1e-6: FID once differed by 1.3e-8 on the dev machine,
        # still ~1e5 times below what a wrong merge moves)
        tol = 1e-5 if m == "fvd" else 1e-6
        assert abs(one[m]["value"] - two[m]["value"]) <= tol * max(1.0, one[m]["value"]), m
        assert one[m]["n_real"] == two[m]["n_real"] == 3 and one[m]["n_fake"] == 3
