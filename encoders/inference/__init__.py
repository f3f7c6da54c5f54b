"""Using a trained model: zero-shot diagnosis and recording embeddings."""
