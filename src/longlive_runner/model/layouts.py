"""File names of the weight layouts users download (no imports: `download` needs no torch)."""

WAN_CONFIG_FILE = "config.json"
WAN_DIT_FILE = "diffusion_pytorch_model.safetensors"
WAN_VAE_FILE = "Wan2.1_VAE.pth"
WAN_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_TOKENIZER_FILE = "google/umt5-xxl/tokenizer.json"
LONGLIVE_BASE_FILE = "models/longlive_base.pt"
LONGLIVE_LORA_FILE = "models/lora.pt"

# LongLive 2.0: Wan-AI/Wan2.2-TI2V-5B (VAE, T5, tokenizer, config.json) + Efficient-Large-Model/LongLive-2.0-5B
WAN22_VAE_FILE = "Wan2.2_VAE.pth"
LONGLIVE2_GENERATOR_FILE = (
    "model_bf16.pt"  # {"generator": {"model.<Wan key>": ...}, "merged_lora": True, ...}
)
LONGLIVE2_LORA_FILE = "lora.pt"  # only for an unmerged generator: {"generator_lora": {PEFT names}}
