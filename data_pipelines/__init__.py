"""Grain input pipelines for video-audio-text datasets."""
