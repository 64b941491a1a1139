"""LoRA mathematics and runtime: deltas and scaling, attach and routing, compose, merge, extract."""
