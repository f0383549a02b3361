import json

_DB = {}


def save_record(key, record):
    _DB[key] = json.dumps(record)


def load_record(key):
    return json.loads(_DB[key])
