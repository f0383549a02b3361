"""Tools the model can call, and their registry."""
