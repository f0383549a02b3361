# app/models/user.py
