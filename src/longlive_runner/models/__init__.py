"""Model code: the causal Wan DiT, its KV cache, the Wan VAE and the umT5 text encoder."""
