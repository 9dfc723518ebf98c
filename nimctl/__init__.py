"""nimctl: NVIDIA NIM's serving contract in front of vLLM's in-process async engine."""

__version__ = "0.1.0"

# The NIM API version this server implements (reported by /v1/version).
API_VERSION = "1.0.0"
