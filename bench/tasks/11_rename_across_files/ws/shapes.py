import math


def calc_area(radius):
    """Area of a circle."""
    return math.pi * radius ** 2


def square_area(side):
    return side * side
