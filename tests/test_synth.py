"""Synthetic endoscopy videos: determinism, look (vignette, colour), motion, and the dataset writer."""
import cv2
import numpy as np
import pytest

from medsora.data import synth
from medsora.data.synth import camera_path, make_scene, make_video, render_frame, video_seed, write_dataset
from medsora.data.video import probe, read_frames


def _radius(h, w):
    """Distance of each pixel from the frame centre, in units of the short side (independent of synth)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2) / min(h, w)


def test_same_seed_same_video_other_seed_differs():
    a, b = make_video(7, frames=6, size=48), make_video(7, frames=6, size=48)
    c = make_video(8, frames=6, size=48)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


@pytest.mark.parametrize("size,hw", [(48, (48, 48)), ((40, 56), (40, 56))])
def test_shape_dtype(size, hw):
    v = make_video(1, frames=5, size=size)
    assert v.shape == (5, *hw, 3) and v.dtype == np.uint8


def test_shorter_video_is_a_prefix():
    # motion is defined per frame, so the length does not change the first frames
    assert np.array_equal(make_video(3, frames=5, size=48), make_video(3, frames=12, size=48)[:5])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dark_outside_field_of_view_reddish_inside(seed):
    v = make_video(seed, frames=4, size=(64, 80))
    r = _radius(64, 80)
    outside, inside = r > synth.FOV_RADIUS + 2 / 64, r < 0.8 * synth.FOV_RADIUS
    assert v[:, outside].max() <= 3  # black beyond the soft edge
    mean = v[:, inside].reshape(-1, 3).mean(0)
    assert mean.mean() > 50  # lit tissue
    assert mean[0] > mean[1] + 30 and mean[0] > mean[2] + 30  # red dominates


def test_consecutive_frames_differ_but_are_correlated():
    v = make_video(4, frames=40, size=96).astype(np.float64).mean(-1)
    inside = _radius(96, 96) < 0.8 * synth.FOV_RADIUS
    x = v[:, inside]  # (T, pixels)

    def corr(i, j):
        return np.corrcoef(x[i], x[j])[0, 1]

    near = np.mean([corr(i, i + 1) for i in range(39)])
    far = np.mean([corr(i, i + 30) for i in range(10)])
    assert np.abs(np.diff(x, axis=0)).mean(1).min() > 0.5  # every frame moves
    assert near > 0.8 and near > far + 0.2


def _phase_velocities(frames):
    """Per-frame shift (dx, dy) of the central square, by cv2.phaseCorrelate."""
    win = cv2.createHanningWindow(frames.shape[1:][::-1], cv2.CV_32F)
    return np.array([cv2.phaseCorrelate(a, b, win)[0] for a, b in zip(frames[:-1], frames[1:])])


def test_motion_is_not_a_constant_translation():
    n, half = 128, 28
    v = make_video(0, frames=48, size=n).astype(np.float32).mean(-1)
    vel = _phase_velocities(v[:, n // 2 - half:n // 2 + half, n // 2 - half:n // 2 + half])

    # control: the same estimator on a texture panned at a constant (2, -1) px / frame: content moves (-2, 1)
    tex = synth.band_noise(np.random.default_rng(0), 256, 8.0)
    ctrl = np.stack([cv2.warpAffine(tex, np.float32([[1, 0, 2 * t], [0, 1, -t]]), (2 * half, 2 * half),
                                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) for t in range(48)])
    ctrl_vel = _phase_velocities(ctrl)
    assert np.allclose(ctrl_vel, [-2.0, 1.0], atol=0.15)  # the estimator sees a constant translation

    speed_change = np.linalg.norm(vel - vel[0], axis=1).max()
    assert speed_change > 1.0  # velocity changes by > 1 px / frame over the clip
    assert np.abs(np.diff(vel, axis=0)).max() < 1.0  # ... but smoothly


def test_camera_path_smooth_bounded_with_zoom_and_rotation():
    p = camera_path(np.random.default_rng(5), 600)
    lo, hi = synth.ZOOM_RANGE
    assert np.abs(p[:, :2]).max() <= synth.PAN_AMPLITUDE + 1e-9
    assert lo - 1e-9 <= p[:, 2].min() and p[:, 2].max() <= hi + 1e-9
    assert np.abs(p[:, 3]).max() <= synth.MAX_ROTATION + 1e-9
    # sinusoids of period >= 50 frames and amplitude <= A: |second difference| <= A (2 pi / 50)^2
    w2 = (2 * np.pi / 50) ** 2
    assert np.abs(np.diff(p[:, 0], 2)).max() <= synth.PAN_AMPLITUDE * w2
    assert np.abs(np.diff(p[:, 3], 2)).max() <= synth.MAX_ROTATION * w2
    # non-linear: the velocity itself changes, and zoom and rotation actually vary
    assert np.ptp(np.diff(p[:, 0])) > 1e-3 and np.ptp(p[:, 2]) > 0.05 and np.ptp(p[:, 3]) > 0.05


def test_rotating_the_camera_rotates_the_frame():
    # light and vignette are radially symmetric and fixed to the camera: a 90 degree roll is np.rot90
    scene = make_scene(np.random.default_rng(2), 48)
    f0 = render_frame(scene, (0.1, -0.05, 1.1, 0.0), 48).astype(int)
    f90 = render_frame(scene, (0.1, -0.05, 1.1, np.pi / 2), 48).astype(int)
    assert np.abs(f90 - np.rot90(f0)).max() <= 2
    assert np.abs(f90 - f0).mean() > 5


def test_polyps_sometimes_and_raised():
    scenes = [make_scene(np.random.default_rng(s), 32) for s in range(30)]
    with_polyp = [s for s in scenes if s.polyps]
    assert 0.2 < len(with_polyp) / len(scenes) < 0.9
    rise = []  # height at the polyp centre above the ring at twice its radius, in radii
    for s in with_polyp:
        x, y, r = s.polyps[0]
        yy, xx = np.mgrid[0:s.height.shape[0], 0:s.height.shape[1]]
        ring = np.abs(np.hypot(xx - x, yy - y) - 2 * r) < 1.5
        rise.append((s.height[int(round(y)), int(round(x))] - s.height[ring].mean()) / r)
    # the dome adds 0.7-0.9 radii; the folds under it add noise of ~0.15 radii
    assert np.mean(rise) > 0.5 and np.min(rise) > 0.2


@pytest.mark.parametrize("fmt", ["frames", "mp4"])
def test_write_dataset_round_trip(tmp_path, fmt):
    paths = write_dataset(tmp_path, videos=2, seed=3, frames=5, size=48, fmt=fmt)
    suffix = ".mp4" if fmt == "mp4" else ""
    assert [p.name for p in paths] == [f"video_000{suffix}", f"video_001{suffix}"]
    expected = [make_video(video_seed(3, i), 5, 48) for i in range(2)]
    for p, want in zip(paths, expected):
        info = probe(p)
        assert (info.num_frames, info.width, info.height) == (5, 48, 48)
        assert info.fps == pytest.approx(synth.DEFAULT_FPS)
        got = read_frames(p, range(5)).astype(int)
        err = np.abs(got - want).mean()
        if fmt == "frames":
            assert err == 0
        else:  # lossy, but far closer to its own video than to the other one
            assert err < 6 and err < 0.5 * np.abs(got - expected[1 - paths.index(p)]).mean()
    assert video_seed(3, 0) != video_seed(3, 1) != video_seed(4, 0)
