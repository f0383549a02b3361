import shapes
from report import total_area

if __name__ == "__main__":
    print(f"circle r=2: {shapes.calc_area(2):.2f}")
    print(f"total: {total_area([1, 2], [3]):.2f}")
