"""Collaborative AI: lightening and validation gates (more of issue 13 lands here)."""
