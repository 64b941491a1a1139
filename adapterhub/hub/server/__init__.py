"""The self-hosted hub: the Hugging Face Hub HTTP API subset plus the registry's own JSON API."""
