import util
from util import title_case

TEXT = "the quick brown fox jumps over the lazy dog"

if __name__ == "__main__":
    print(title_case(TEXT))
    print(util.word_count(TEXT), "words")
