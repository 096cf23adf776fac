"""llmkit: build a ChatGPT-style assistant stage by stage, and see what each stage does.

Every stage is a config (`llmkit.options.<stage>`) and a module with `config_for(preset)` and
`run(config, run_dir)`; `llmkit.registry` lists them in order, `llmkit.pipeline` runs them, and
`llmkit.lifecycle` is the one place a stage's run folder is written. Every stage raises `StageError` for input it
cannot use.
"""

from llmkit.errors import StageError

__all__ = ["StageError"]


__version__ = "0.1.0"
