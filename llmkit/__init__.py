"""llmkit: build a ChatGPT-style assistant stage by stage, and see what each stage does.

One module per stage, each a config dataclass plus `run(config, run_dir)`; see DESIGN in the README.
"""

__version__ = "0.1.0"
