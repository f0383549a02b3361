"""The OpenAI-compatible model server: app factory, schemas, engines (llama.cpp, Transformers)."""
