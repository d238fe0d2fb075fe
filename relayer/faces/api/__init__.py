"""The REST face: FastAPI routes that translate HTTP to service calls and back."""
