#!/usr/bin/env bash
# The README's main-job command: a self-contained demo of the reconciler on this machine.
# Sets up (idempotent), makes sure a Docker Engine answers, creates a local git repository from examples/
# with master, develop and one feature branch, then runs `reconciler run -c environments.yaml`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh
# No registry here? Use the local busybox base image under the tag the demo's compose files name.
if ! docker image inspect busybox:1.36 >/dev/null 2>&1; then
  docker pull -q busybox:1.36 >/dev/null 2>&1 || docker tag reconciler-test/busybox:latest busybox:1.36
fi
bash scripts/demo-repo.sh "$ROOT/state/demo.git" "$ROOT/state/demo-work"
cat <<MSG

  reconciler demo
  ---------------
  status page:   http://127.0.0.1:9469/        (JSON: /api/environments, metrics: /metrics)
  CLI status:    .venv/bin/reconciler status -c environments.yaml
  demo repo:     $ROOT/state/demo-work  (pushes to $ROOT/state/demo.git)

  Try, in another terminal:
    cd $ROOT/state/demo-work
    git checkout -b feature/signup && echo '<p>signup</p>' >> site/index.html \\
      && git commit -qam signup && git push -q origin feature/signup      # a new test-feature-signup stack
    git push -q origin --delete feature/signup                            # ...and it disappears
    git checkout develop && echo '<p>v2</p>' >> site/index.html \\
      && git commit -qam v2 && git push -q origin develop                 # staging updates
  Stop with Ctrl-C.

MSG
exec .venv/bin/reconciler run -c environments.yaml
