# app/__init__.py
