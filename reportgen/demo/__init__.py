"""The demo model's world: procedural captioned pictures, the caption check, and the training script."""
