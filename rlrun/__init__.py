"""rlrun: a command-line runner for on-policy RL experiments (policy gradient to PPO)."""

__version__ = "0.1.0"
