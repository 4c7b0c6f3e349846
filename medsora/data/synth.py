"""Synthetic endoscopy-like videos: the built-in data of the demo and the tests.

Each video is a flythrough of one textured "mucosa" canvas, made once per video:

    albedo  pinkish-red base x low-frequency shading x mid-frequency texture, darker branching vessels
    height  small wet bumps (they catch the light), broad folds, sometimes (by seed) a polyp-like blob

and rendered frame by frame through a camera that pans, zooms and rotates along sums of slow sinusoids
with random phases (smooth, never a straight line). Lighting is fixed to the camera, as in an
endoscope: a light at the lens gives diffuse shading from the surface normals, specular glints where
a normal faces the lens (hence near the centre, moving as the tissue moves), a radial fall-off and a
dark vignette outside a circular field of view.

    make_video(seed, frames=64, size=128) -> uint8 (T, H, W, 3)     a pure function of its arguments
    write_dataset(out_dir, videos=8, seed=0, ...) -> [video_000.mp4, ...] or [video_000/, ...]
    write_dataset(..., labels=True) also writes labels.csv: `path,label`, polyp / normal, balanced

`polyp=True / False` forces a polyp onto the canvas / keeps it free of polyps (the labels of the downstream
test; a forced polyp is drawn larger and nearer the centre, so that the video shows it); `polyp=None` (the
default) draws exactly what it always drew, so existing seeds give the same videos.

Motion is defined per frame (not per video length), so `make_video(s, frames=16)` is the first 16
frames of `make_video(s, frames=64)`. All lengths scale with the frame size, so 128 px and 768x576
videos show the same scene at different resolutions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from medsora.data.video import write_frames, write_video

DEFAULT_FPS = 25.0  # frame folders are probed at 25 fps (video.DEFAULT_FOLDER_FPS); mp4s match it

# Camera limits, in units of the frame's short side ("unit").
FOV_RADIUS = 0.47      # circular field of view, radius
PAN_AMPLITUDE = 0.45   # max |offset| of the camera centre from the canvas centre, per axis
ZOOM_RANGE = (0.8, 1.3)
MAX_ROTATION = 0.6     # radians
# A polyp forced by `polyp=True` (labelled data) is drawn larger and nearer the centre, so that a clip of the video
# shows it: the same draws, radius x SCALE, offset from the canvas centre x SHIFT.
FORCED_POLYP_SCALE = 1.6
FORCED_POLYP_SHIFT = 0.5


@dataclass
class Scene:
    """The canvas of one video, float32 in canvas pixels, and what was placed on it."""

    canvas: np.ndarray                      # (L, L, 4): albedo RGB in [0, 1], height in canvas pixels
    unit: float                             # canvas pixels per frame short side at zoom 1
    polyps: list[tuple[float, float, float]] = field(default_factory=list)  # (x, y, radius), canvas px

    @property
    def albedo(self) -> np.ndarray:
        return self.canvas[..., :3]

    @property
    def height(self) -> np.ndarray:
        return self.canvas[..., 3]


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = (int(s) for s in size)
    return h, w


def band_noise(rng: np.random.Generator, n: int, wavelength: float, bandwidth: float = 0.7) -> np.ndarray:
    """(n, n) zero-mean unit-std noise whose spectrum is a log-normal band around `wavelength` pixels."""
    spec = np.fft.rfft2(rng.standard_normal((n, n), dtype=np.float32))
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.sqrt(fx**2 + fy**2) + 1e-9
    gain = np.exp(-0.5 * (np.log(f * wavelength) / bandwidth) ** 2)
    out = np.fft.irfft2(spec * gain, s=(n, n)).astype(np.float32)
    return (out - out.mean()) / (out.std() + 1e-8)


def _vessel_tree(rng, img, x, y, angle, width, step, depth, scale):
    """A meandering, tapering random walk that spawns thinner side branches, drawn into uint8 `img`.

    Written by hand: no library draws branching vessel trees; cv2 only draws the polylines.
    """
    n = int(rng.integers(60, 140)) >> depth
    angles = angle + np.cumsum(rng.normal(0.0, 0.22, n))
    pts = np.array([x, y]) + np.cumsum(step * np.stack([np.cos(angles), np.sin(angles)], 1), 0)
    pts = np.vstack([[x, y], pts])                              # (n + 1, 2) canvas px
    widths = width * 0.993 ** np.arange(n)
    n = min(n, int(np.searchsorted(-widths, -0.5 * scale)) + 1)  # stop once thinner than half a pixel
    fixed = np.round(pts * 16).astype(np.int32)                  # 4 fractional bits for cv2 shift=4
    for i in range(0, n, 8):                                     # 8 segments per polyline, then taper
        shade = int(255 * min(1.0, 0.35 + 0.25 * widths[i] / scale))   # thin vessels are fainter
        cv2.polylines(img, [fixed[i:i + 9]], False, shade, max(1, int(round(widths[i]))), cv2.LINE_AA, shift=4)
    if depth < 3:
        for i in np.flatnonzero(rng.random(n) < 0.06):
            side = angles[i] + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0)
            _vessel_tree(rng, img, *pts[i + 1], side, widths[i] * rng.uniform(0.5, 0.75), step * 0.8,
                         depth + 1, scale)


def make_scene(rng: np.random.Generator, size=128, polyp: bool | None = None) -> Scene:
    """The canvas of one video: large enough that the field of view never leaves it.

    `polyp`: None draws 0-2 polyps by seed; True at least one (the drawn number, or 1); False none.
    """
    h, w = _size_hw(size)
    unit = float(min(h, w))
    reach = PAN_AMPLITUDE + FOV_RADIUS / ZOOM_RANGE[0] + 0.05     # canvas half-size, in units
    n = int(np.ceil(2 * reach * unit))

    # albedo: base colour x low-frequency shading x mid-frequency texture
    base = np.array([rng.uniform(0.78, 0.92), rng.uniform(0.32, 0.44), rng.uniform(0.30, 0.40)], np.float32)
    low = band_noise(rng, n, 0.9 * unit, 0.8)
    mid = band_noise(rng, n, 0.06 * unit) + 0.3 * band_noise(rng, n, 0.025 * unit)
    albedo = base * (0.8 + 0.12 * low)[..., None] * (1 + 0.06 * mid)[..., None]
    albedo[..., 1:] *= (1 + 0.04 * low)[..., None]  # paler / pinker patches

    # vessels: darker, bluish-red branching trees
    vessels = np.zeros((n, n), np.uint8)
    scale = unit / 128
    for _ in range(int(rng.integers(3, 7) * (n / unit) ** 2)):
        x0, y0 = rng.uniform(0, n, 2)
        _vessel_tree(rng, vessels, x0, y0, rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 2.5) * scale,
                     0.015 * unit, 0, scale)
    v = cv2.GaussianBlur(vessels.astype(np.float32) / 255, (0, 0), 0.6 * scale + 0.3)
    albedo *= 1 - v[..., None] * np.array([0.35, 0.6, 0.45], np.float32)

    # height: small wet bumps, broad folds, and sometimes a polyp
    height = ((0.003 * unit) * band_noise(rng, n, 0.12 * unit, 0.4)
              + (0.02 * unit) * band_noise(rng, n, 0.5 * unit, 0.4))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    polyps = []
    count = int(rng.choice([0, 0, 1, 1, 2]))   # drawn in every case: the canvas above never depends on `polyp`
    if polyp is not None:
        count = max(count, 1) if polyp else 0
    for _ in range(count):
        # near the canvas centre, where the camera spends its time
        cx, cy = n / 2 + rng.uniform(-0.3, 0.3, 2) * unit * (FORCED_POLYP_SHIFT if polyp else 1.0)
        r0 = rng.uniform(0.12, 0.25) * unit * (FORCED_POLYP_SCALE if polyp else 1.0)
        theta = np.arctan2(yy - cy, xx - cx)
        wobble = 1 + sum(rng.uniform(0, 0.08) * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
        d = np.hypot(xx - cx, yy - cy) / (r0 * wobble)
        bump = np.exp(-2.5 * d**2)  # smooth dome, ~0 beyond d = 1.5
        height += rng.uniform(0.7, 0.9) * r0 * bump
        albedo *= (1 + bump[..., None] * np.array([0.12, 0.4, 0.35], np.float32))  # paler, pinker
        polyps.append((float(cx), float(cy), float(r0)))
    return Scene(np.dstack([np.clip(albedo, 0, 1), height]).astype(np.float32), unit, polyps)


def camera_path(rng: np.random.Generator, frames: int) -> np.ndarray:
    """(T, 4) float64: centre offset x, y (units), zoom, rotation (radians) per frame.

    Each is a sum of three sinusoids with periods of 50-400 frames and random phases; amplitudes are
    normalised so the limits above hold for every t.
    """
    t = np.arange(frames, dtype=np.float64)[:, None]

    def wave(limit):
        amp = rng.uniform(0.3, 1.0, 3)
        period = rng.uniform(50, 400, 3)
        phase = rng.uniform(0, 2 * np.pi, 3)
        return limit * (amp * np.sin(2 * np.pi * t / period + phase)).sum(1) / amp.sum()

    lo, hi = np.log(ZOOM_RANGE)
    zoom = np.exp((lo + hi) / 2 + wave((hi - lo) / 2))
    return np.stack([wave(PAN_AMPLITUDE), wave(PAN_AMPLITUDE), zoom, wave(MAX_ROTATION)], axis=1)


@lru_cache(maxsize=4)
def _lens(h: int, w: int):
    """Per-pixel fields fixed to the camera: light rays, radial fall-off, vignette. Shapes (H, W)."""
    unit = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xx - (w - 1) / 2) / unit, (yy - (h - 1) / 2) / unit
    r = np.hypot(u, v) / FOV_RADIUS                 # 1 at the edge of the field of view
    # light and lens at the same point: unit ray from the surface to the lens of a wide-angle endoscope
    fov_tan = 1.6
    lx, ly = -u / FOV_RADIUS * fov_tan, -v / FOV_RADIUS * fov_tan
    lnorm = np.sqrt(lx**2 + ly**2 + 1)
    falloff = 1.1 - 0.55 * r**2
    vignette = np.clip((1 - r) * unit * FOV_RADIUS / 2.0, 0, 1)   # ~2 px soft edge
    spot = np.exp(-(r / 0.6) ** 2)                  # glints only where the light is strong
    return lx / lnorm, ly / lnorm, 1 / lnorm, falloff * vignette, spot * vignette


def render_frame(scene: Scene, cam, size=128) -> np.ndarray:
    """One uint8 (H, W, 3) frame of `scene` seen by camera `cam` = (x, y, zoom, angle)."""
    h, w = _size_hw(size)
    ox, oy, zoom, angle = cam
    n = scene.canvas.shape[0]
    k = scene.unit / min(h, w) / zoom     # canvas pixels per frame pixel
    c, s = np.cos(angle), np.sin(angle)
    # frame pixel p -> canvas point  centre + k R(angle) (p - frame centre)
    centre = n / 2 + np.array([ox, oy]) * scene.unit
    rot = k * np.array([[c, -s], [s, c]])
    m = np.hstack([rot, (centre - rot @ np.array([(w - 1) / 2, (h - 1) / 2]))[:, None]])
    img = cv2.warpAffine(scene.canvas, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT_101)
    albedo, height = img[..., :3], img[..., 3]

    # surface normal (-gx, -gy, 1) from the height slope (canvas px per canvas px: frame gradient / k)
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) / (8 * k)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) / (8 * k)
    lx, ly, lz, shade, spot = _lens(h, w)
    ndotl = np.clip((lz - gx * lx - gy * ly) / np.sqrt(gx**2 + gy**2 + 1), 0, 1)
    diffuse = 0.2 + 0.8 * ndotl
    spec = np.clip((ndotl - 0.985) / 0.015, 0, 1) ** 3 * spot   # mirror-like: normal faces the lens
    rgb = albedo * (diffuse * shade)[..., None] + 0.9 * spec[..., None]
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_video(seed: int, frames: int = 64, size=128, polyp: bool | None = None) -> np.ndarray:
    """uint8 (T, H, W, 3) endoscopy-like video; `size` is an int (square) or (height, width).

    A pure function of its arguments: the same seed gives the identical array. `polyp`: see `make_scene`.
    """
    rng = np.random.default_rng(seed)
    scene = make_scene(rng, size, polyp)
    path = camera_path(np.random.default_rng([seed, 1]), frames)  # independent of the canvas draws
    h, w = _size_hw(size)
    out = np.empty((frames, h, w, 3), np.uint8)
    for i, cam in enumerate(path):
        out[i] = render_frame(scene, cam, size)
    return out


def video_seed(seed: int, index: int) -> int:
    """The seed of video `index` of a dataset made with `seed` (independent streams per video)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


LABELS = ("polyp", "normal")   # the labels `write_dataset(labels=True)` writes: even videos polyp, odd normal


def write_dataset(out_dir, videos: int = 8, seed: int = 0, frames: int = 64, size=128,
                  fmt: str = "mp4", fps: float = DEFAULT_FPS, labels: bool = False) -> list[Path]:
    """Write `videos` synthetic videos to `out_dir` as video_000.mp4, ... or video_000/00000.png, ...

    Video i is `make_video(video_seed(seed, i), frames, size)`. Returns the written paths.
    With `labels`, video i is drawn with a polyp when i is even and without one when i is odd (balanced), and
    `out_dir/labels.csv` lists `path,label` (paths relative to `out_dir`, labels `polyp` / `normal`).
    """
    if fmt not in ("mp4", "frames"):
        raise ValueError(f"fmt must be 'mp4' or 'frames', got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, rows = [], ["path,label"]
    for i in tqdm(range(videos), desc="synth", unit="video"):
        polyp = (i % 2 == 0) if labels else None
        clip = make_video(video_seed(seed, i), frames, size, polyp=polyp)
        if fmt == "mp4":
            paths.append(write_video(out_dir / f"video_{i:03d}.mp4", clip, fps=fps))
        else:
            paths.append(write_frames(out_dir / f"video_{i:03d}", clip))
        rows.append(f"{paths[-1].name},{LABELS[0] if polyp else LABELS[1]}")
    if labels:
        tmp = out_dir / "labels.csv.tmp"
        tmp.write_text("\n".join(rows) + "\n")
        tmp.replace(out_dir / "labels.csv")
    return paths
