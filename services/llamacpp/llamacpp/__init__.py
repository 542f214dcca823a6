"""The llamacpp engine: GGUF weights, then llama.cpp's own server (llama-server)."""
