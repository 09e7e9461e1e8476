"""Registry: one file per household (一户一档) and its review workflow."""
