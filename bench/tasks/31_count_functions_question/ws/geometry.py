import math


def distance(a, b):
    return math.dist(a, b)


def midpoint(a, b):
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)


class Vector:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def length(self):
        return math.hypot(self.x, self.y)

    def scaled(self, k):
        return Vector(self.x * k, self.y * k)


def polygon_area(points):
    n = len(points)
    s = sum(points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1] for i in range(n))
    return abs(s) / 2


def perimeter(points):
    return sum(distance(points[i], points[(i + 1) % len(points)]) for i in range(len(points)))


def centroid(points):
    return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))
