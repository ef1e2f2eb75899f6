"""The command-line tools, the package's top floor: each module is one ``mocapact-*`` command (or
``python -m mocapact_envs.tools.<name>``) built on the library below it, which never imports it."""
