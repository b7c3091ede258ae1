"""OpenAI-compatible gateway (:8080): routes each request to a healthy model worker."""
