"""The model side, torch only: it knows nothing of sessions, sockets or the command line.

`config` (the presets as plain data), `dit`, `kv_cache`, `vae`, `t5` (the networks), `tokenizer` and
`text_encoder` (prompt text to features), `scheduler` (the denoising steps), `checkpoints`, `layouts`
and `lora` (reading weights from disk), `generator` (`VideoGenerator`, the block loop) and `pipeline`
(`load_pipeline`). This `__init__` imports nothing, so `model.config` and `model.layouts` load without
torch.
"""
