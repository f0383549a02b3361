import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(description="Greet someone.")
    parser.add_argument("name")
    parser.add_argument("--times", type=int, default=1, help="how many greetings")
    parser.add_argument("--verbose", action="store_true", help="say more")
    args = parser.parse_args(argv)
    if args.verbose:
        print("verbose mode")
    for _ in range(args.times):
        print(f"Hello, {args.name}!")


if __name__ == "__main__":
    main()
