"""Models that turn frames, audio chunks and alerts into evidence.

Each submodule wraps one model family and loads its weights from local files
only; `pipeline.models.store` fetches and verifies them ahead of time.
"""
