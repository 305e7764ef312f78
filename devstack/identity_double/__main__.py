"""`python -m devstack.identity_double`: the command line is in app.py."""

from devstack.identity_double.app import main

if __name__ == "__main__":
    main()
