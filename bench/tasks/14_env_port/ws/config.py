import os

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = 8000
DEBUG = False
