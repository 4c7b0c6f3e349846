"""Video data: the reader/writer, the dataset index, clips, synthetic endoscopy videos."""
