"""A tiny system for the runner's tests: services `alpha` and `beta` and a gateway `edge`, each a
chassis app with nothing of its own but `/whoami`, and `broken`, which cannot start."""
