"""Optical flow, flow images, DINO features and the representation-alignment loss."""
