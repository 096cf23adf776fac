"""llmkit: build a ChatGPT-style assistant stage by stage, and see what each stage does.

One module per stage, each a config dataclass plus `config_for(preset)` and `run(config, run_dir)`;
`llmkit.pipeline` lists them in order and runs them. Every stage raises `StageError` for input it cannot use.
"""

from llmkit.runs import StageError

__all__ = ["StageError"]
__version__ = "0.1.0"
