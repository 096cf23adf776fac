"""Reinforcement learning after SFT: llmkit's own PPO (`llmkit.rl.ppo`), and GRPO, RLOO, DPO, KTO and ORPO through
TRL's trainers (`llmkit.rl.grpo`, ...), all reading their inputs alike (`llmkit.rl.inputs`) and evaluated alike
(`llmkit.measures`, "policy")."""
