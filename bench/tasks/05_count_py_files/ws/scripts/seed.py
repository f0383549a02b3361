# scripts/seed.py
