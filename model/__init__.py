"""Model profiles (Qwen2.5-Coder 0.5B–7B), and finding or downloading the weights to serve.

Downloaded weights live in ``model/weights/`` (git-ignored). Importing this package is cheap: it
never imports torch or llama_cpp.
"""
