import sys

from flows.cli import main

main(sys.argv[1:])
