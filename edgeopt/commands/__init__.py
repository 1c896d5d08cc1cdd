"""The ``edgeopt`` command line's commands that need the compiler (``compile``, ``tune``, ``compare``) or that run
artifacts (``run``, ``bench``), one module each; ``edgeopt.cli`` parses the arguments and dispatches."""
