"""The bundled closed world: a small fictional world (world.json), the data every stage runs on by default, and
the labels that make each stage measurable. `generate.py` writes all of it, deterministically. Installed, this
folder is the package `llmkit.data_samples`; `llmkit.loaders.bundled_path(name)` finds a file in it."""
