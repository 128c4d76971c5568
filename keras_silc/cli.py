def main(argv=None):
    raise SystemExit("placeholder")
