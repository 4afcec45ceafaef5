"""chatgw: a serverless, OpenAI-compatible chat-completions gateway."""

from chatgw.version import __version__

__all__ = ["__version__"]
