"""Export zoo networks to deployment runtimes and measure them there."""
