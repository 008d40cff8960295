"""The benchmark scripts: their baselines are real and they run end to end."""
