import sqlite3
from dataclasses import dataclass

import requests


@dataclass
class Store:
    path: str

    def dump(self):
        with sqlite3.connect(self.path) as db:
            return str(db.execute("select * from items").fetchall())

    def sync(self, url):
        return requests.post(url, data=self.dump(), timeout=10).status_code
