rm -f util.py
