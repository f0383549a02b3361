# app/views/home.py
