from calc import average, median, percent_change


def test_average():
    assert average([1, 2, 3, 4]) == 2.5
    assert average([]) == 0.0


def test_percent_change():
    assert percent_change(50, 75) == 50.0
    assert percent_change(200, 100) == -50.0


def test_median():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
