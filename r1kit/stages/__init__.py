"""Stages of a recipe: each reads its inputs by name and writes its own directory."""
