"""Ice families drawn apart from model/trainingdata, for benchmarks/unseen_family.py only: each module's
``draw(image, rng)`` returns (the crop with ice, [(patch size px, contrast), ...]) or None."""
