"""Video and image generation metrics: FVD, CD-FVD, FID, IS, frame consistency."""
