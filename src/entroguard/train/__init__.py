"""Rate-distortion training, checkpoints and the default zoo."""
