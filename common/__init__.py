"""Wire types and helpers shared by every service: OpenAI protocol models, the error table,
internal records and the settings base. Kept small and free of torch so the gateway and the
registries install without it."""
