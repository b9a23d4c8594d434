"""aider-wrapper: runs the real `aider` CLI in a git workspace for one iteration and reports,
from git, which files changed. `app` is the HTTP service; the other modules are its parts:
`invocation` (aider's command line, model files and environment), `runner` (the subprocess), `gitstate`
(changed files) and `errors` (fatal errors aider prints but exits 0 on)."""
