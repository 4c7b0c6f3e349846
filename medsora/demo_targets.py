"""The demo's targets (issue "The demo shows the method working"), each measured on the run's own clips and stated
next to its value, met or not.

    rows = demo_targets(stats, vae_psnr)   # stats: {"real", "real through the VAE", "generated"} -> clip_stats means

- the VAE: held-out PSNR >= 30 dB; its reconstructions keep >= 0.8x the real clips' motion;
- the generated clips: motion within +-25 % of the real clips', mean colour within 8 grey levels per channel,
  sharpness (mean squared 3x3 Laplacian) >= 0.6x the real clips'.

Each motion row also states the clips' flow jitter (px, lower is smoother): texture that flickers raises the motion
figure without moving, and the jitter is what tells the two apart.
"""
from __future__ import annotations


def demo_targets(stats: dict[str, dict], vae_psnr: float | None) -> list[dict]:
    real, recon, fake = (stats.get(k) for k in ("real", "real through the VAE", "generated"))
    rows = []

    def add(target: str, measured: str, met: bool) -> None:
        rows.append({"target": target, "measured": measured, "met": bool(met)})

    def jitter(clips: dict) -> str:
        return f"; flow jitter {clips['flow_jitter']:.2f} vs {real['flow_jitter']:.2f} px" if "flow_jitter" in clips else ""

    if vae_psnr is not None:
        add("VAE held-out PSNR >= 30 dB", f"{vae_psnr:.1f} dB", vae_psnr >= 30)
    if real and recon:
        r = recon["motion"] / max(real["motion"], 1e-9)
        add("VAE reconstructions keep >= 0.8x the real motion",
            f"{r:.2f}x ({recon['motion']:.2f} vs {real['motion']:.2f} grey levels{jitter(recon)})", r >= 0.8)
    if real and fake:
        r = fake["motion"] / max(real["motion"], 1e-9)
        add("generated motion within +-25 % of real",
            f"{r:.2f}x ({fake['motion']:.2f} vs {real['motion']:.2f} grey levels{jitter(fake)})", 0.75 <= r <= 1.25)
        gap = [abs(a - b) for a, b in zip(fake["rgb_mean"], real["rgb_mean"])]
        add("generated mean colour within 8 grey levels per channel",
            "R/G/B off by " + " / ".join(f"{g:.1f}" for g in gap), max(gap) <= 8)
        r = fake["sharpness"] / max(real["sharpness"], 1e-9)
        add("generated sharpness >= 0.6x real (mean squared 3x3 Laplacian)",
            f"{r:.2f}x ({fake['sharpness']:.1f} vs {real['sharpness']:.1f})", r >= 0.6)
    return rows
