"""HTTP routes of the gateway: OpenAI endpoints and operator endpoints."""
