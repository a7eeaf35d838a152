"""The prediction server for Vertex AI custom containers (and local use)."""
