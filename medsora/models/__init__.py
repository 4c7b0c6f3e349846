"""Networks: Mamba-2, spiral scans, the MedSora backbone, the benchmark baseline."""
