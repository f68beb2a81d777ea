"""Tier 2's view of an HTTP API: the OpenAPI loader (spec), value generation and mutation (values),
producer → consumer dependencies (deps). Low layer: stdlib, yaml, jsonschema/referencing/openapi-spec-validator."""
