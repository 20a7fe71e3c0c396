"""Training: data preparation (``prepare``), shards, datasets and the stages run under HF accelerate."""
