import collections
import math

import numpy as np
from tqdm import tqdm

from service.store import Store


def spread(values):
    arr = np.array(values)
    return float(arr.std()), math.sqrt(len(values))


def tally(rows):
    return collections.Counter(r[0] for r in tqdm(rows))
