"""Hydra configs shipped with the package (the `conf` folder at the repo root links here)."""
