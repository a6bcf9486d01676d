"""On-device runtime: numpy + an inference engine, no torch. `c2d.runtime.load(bundle).generate("seven")`."""


def __getattr__(name):
    # Lazy, so that importing c2d.runtime.audio (the training front end) does not load onnxruntime.
    if name in ("load", "Generator", "Generation", "GenerationError"):
        from c2d.runtime import generate

        return getattr(generate, name)
    raise AttributeError(f"module 'c2d.runtime' has no attribute {name!r}")
