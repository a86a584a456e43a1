"""GoModel: an OpenAI-compatible gateway to Oracle Generative AI, as a mitmproxy addon."""
