"""adapterhub: a registry for LoRA adapters."""
