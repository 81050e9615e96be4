"""An example third-party package: a small pure-PyTorch MoE (tiny_moe) and its moe-cts adapter (adapter)."""
