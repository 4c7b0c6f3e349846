"""Networks: Mamba-2, spiral scans, the MedSora backbone, the benchmark baseline."""


def __getattr__(name):  # lazy, so `import medsora.models` stays light
    if name in ("MedSora", "build_model"):
        from . import medsora

        return getattr(medsora, name)
    raise AttributeError(name)
