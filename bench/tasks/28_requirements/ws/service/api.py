import json
import os

from flask import Flask, jsonify

from service.store import Store

app = Flask(__name__)
store = Store(os.environ.get("DB", "data.db"))


@app.get("/items")
def items():
    return jsonify(json.loads(store.dump()))
