# app/models/order.py
