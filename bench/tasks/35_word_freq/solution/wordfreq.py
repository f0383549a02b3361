import collections
import re
import sys

words = re.findall(r"[a-z0-9']+", open(sys.argv[1]).read().lower())
for word, count in collections.Counter(words).most_common(3):
    print(word, count)
