"""Vertex AI helpers the Google provider lacks: endpoint/transport-configurable hooks (more to come)."""
