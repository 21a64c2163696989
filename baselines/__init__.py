"""Transfer methods other than KIND, one module each (registered in pyproject.toml's entry points)."""
