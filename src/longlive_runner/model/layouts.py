"""File names of the weight layouts users download (no imports: `download` needs no torch)."""

WAN_CONFIG_FILE = "config.json"
WAN_DIT_FILE = "diffusion_pytorch_model.safetensors"
WAN_VAE_FILE = "Wan2.1_VAE.pth"
WAN_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_TOKENIZER_FILE = "google/umt5-xxl/tokenizer.json"
LONGLIVE_BASE_FILE = "models/longlive_base.pt"
LONGLIVE_LORA_FILE = "models/lora.pt"
