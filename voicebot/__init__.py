"""voicebot: a self-hosted voice robot for call centers."""

__version__ = "0.1.0"
