# app/models/__init__.py
