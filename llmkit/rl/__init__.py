"""Reinforcement learning from the reward model: llmkit's own PPO (`llmkit.rl.ppo`)."""
