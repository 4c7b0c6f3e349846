"""Files shipped with the package: `demo_vae/`, the demo's pretrained tiny VAE (made by tools/make_demo_vae.py)."""
from pathlib import Path

DEMO_VAE = Path(__file__).with_name("demo_vae")
