# manage.py
