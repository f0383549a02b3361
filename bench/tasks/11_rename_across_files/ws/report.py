from shapes import calc_area, square_area


def total_area(circles, squares):
    return sum(calc_area(r) for r in circles) + sum(square_area(s) for s in squares)
