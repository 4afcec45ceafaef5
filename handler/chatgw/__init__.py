"""chatgw: a serverless, OpenAI-compatible chat-completions gateway."""

__version__ = "0.1.0"
