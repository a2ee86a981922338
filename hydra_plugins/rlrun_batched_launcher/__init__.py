"""rlrun's batched launcher where Hydra looks for launchers (see batched_launcher.py)."""
